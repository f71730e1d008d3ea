"""Run by torchrun in `test_vllm_training.py`: two steps of `sampler: vllm` AAPO training under
DDP on CPU (gloo), each process with its own policy and reference engines. Each process saves
its step count, its policy's weight hash, the seeds its engines were called with, eight
completions of each of four prompts (the same on both) from its synced policy engine, and the
largest gap between those completions' engine log-probs and its trained model's."""

import sys

import torch

from aapo.rollout import SamplingParams
from aapo.training.config import TrainConfig
from aapo.training.logprobs import Packed, packed_logprobs
from aapo.training.reference.cache import weights_sha256
from aapo.training.trainer import Trainer


def main(out_dir: str) -> None:
    config = TrainConfig(
        sampler="vllm",
        num_generations=4,
        per_device_train_batch_size=8,  # 2 prompts per process and step
        gradient_accumulation_steps=1,
        max_completion_length=32,
        dataset_size=16,
        learning_rate=1e-3,
        max_steps=2,
        report_to=[],
        output_dir=f"{out_dir}/run",
    )
    trainer = Trainer(config)
    acc = trainer.accelerator
    seeds: dict[str, list[int]] = {"policy": [], "reference": []}
    engines = {"policy": trainer.policy_sampler.engine,
               "reference": trainer.parts.reference.sampler.engine}  # fmt: skip
    for name, engine in engines.items():
        generate = engine.generate

        def recorded(prompts, params, *, seed=None, _generate=generate, _name=name):
            seeds[_name].append(seed)
            return _generate(prompts, params, seed=seed)

        engine.generate = recorded
    summary = trainer.train()
    trainer.parts.sync_weights()  # the last step's weights, as the next batch would
    prompts = [row.prompt_ids for row in trainer.rows[:4]]  # the same on both processes
    params = SamplingParams(n=8, temperature=1.5, max_new_tokens=24)  # a peaked model: T > 1
    groups = trainer.policy_sampler.generate(prompts, params)
    model = acc.unwrap_model(trainer.model)
    gaps = []
    for prompt, group in zip(prompts, groups, strict=True):
        for sample in group:
            ids = sample.completion_ids
            packed = Packed.build([prompt], [0], [ids], trainer.tokenizer.pad_token_id)
            with torch.no_grad():
                mine = packed_logprobs(model, packed, params.temperature)[0, : len(ids)]
            gaps.append((mine - torch.tensor(sample.logprobs)).abs().max().item())
    torch.save(
        {
            "steps": summary["steps"],
            "final_metrics": summary["final_metrics"],
            "weights": weights_sha256(model),
            "seeds": seeds,
            "completions": [[s.completion_ids for s in group] for group in groups],
            "local_gap": max(gaps),
        },
        f"{out_dir}/process-{acc.process_index}.pt",
    )


if __name__ == "__main__":
    main(sys.argv[1])
