"""Run by torchrun in `test_distributed.py`: one training step on a crafted batch, saving the
averaged gradient (process 0) so 1- and 2-process runs can be compared."""

import sys

import torch

from aapo.models import load_tokenizer
from aapo.rollout import Sample
from aapo.training.config import TrainConfig
from aapo.training.step import train_round
from aapo.training.trainer import Trainer


class Crafted:
    def __init__(self, tokenizer):
        self.texts = [
            "<think> 1 </think> <answer> \\boxed{1} </answer>",
            "<think> 22 </think> <answer> \\boxed{2} </answer>",
        ]
        self.ids = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in self.texts]

    def generate(self, prompts, params):
        return [
            [Sample(list(self.ids[i % 2]), self.texts[i % 2], False) for i in range(params.n)]
            for _ in prompts
        ]


def crafted_step(out_path: str, per_device: int, accumulation: int, **changes):
    """One training step on the crafted batch, the gradient kept: (trainer, step output)."""
    config = TrainConfig(
        num_generations=4,
        per_device_train_batch_size=per_device,
        gradient_accumulation_steps=accumulation,
        max_steps=1,
        dataset_size=64,
        reward_funcs=["rewards_for_tests:boxed_one"],
        report_to=[],
        output_dir=out_path + ".run",
        scale_rewards="batch",
        **changes,
    )
    sampler = Crafted(load_tokenizer(config.model_name_or_path))
    trainer = Trainer(config, policy_sampler=sampler, reference_sampler=sampler)
    trainer.parts.optimizer.zero_grad = lambda set_to_none=True: None  # keep the gradient
    return trainer, next(train_round(trainer.parts, trainer.draw_rows(), trainer.draw_rows))


def main(out_path: str, per_device: int, accumulation: int) -> None:
    trainer, _ = crafted_step(out_path, per_device, accumulation)
    if trainer.accelerator.is_main_process:
        model = trainer.accelerator.unwrap_model(trainer.model)
        torch.save({n: p.grad.clone() for n, p in model.named_parameters()}, out_path)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
