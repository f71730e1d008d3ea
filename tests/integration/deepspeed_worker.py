"""Run by torchrun in `test_deepspeed.py`: one optimizer step of the real trainer on the crafted
batch of `grad_worker.py`, saving (process 0) the step's full gradient, its reported norm, the
norm of the gradient the optimizer was given, how many optimizer steps ran and the weights
after the step. With `ACCELERATE_USE_DEEPSPEED` unset it is the plain 1-process reference.

Under DeepSpeed the gradient is freed inside the engine's step, so it is read where DeepSpeed
hands it over: the full gradient (`safe_get_full_grad`) just before the engine's step, and the
clipped one as the inner torch optimizer receives it (each process's partition)."""

import sys

import torch
from accelerate.utils import gather_object
from grad_worker import Crafted

from aapo.models import load_tokenizer
from aapo.training.config import TrainConfig
from aapo.training.step import train_round
from aapo.training.trainer import Trainer


def _trainer(out_path: str, per_device: int, accumulation: int, max_grad_norm: float) -> Trainer:
    config = TrainConfig(
        num_generations=4,
        per_device_train_batch_size=per_device,
        gradient_accumulation_steps=accumulation,
        max_grad_norm=max_grad_norm,
        max_steps=1,
        dataset_size=64,
        reward_funcs=["rewards_for_tests:boxed_one"],
        report_to=[],
        output_dir=out_path + ".run",
        scale_rewards="batch",
    )
    sampler = Crafted(load_tokenizer(config.model_name_or_path))
    return Trainer(config, policy_sampler=sampler, reference_sampler=sampler)


def _watch_deepspeed(trainer: Trainer, seen: dict) -> None:
    """Record the gradient at each engine step and the clipped gradient the optimizer gets."""
    from deepspeed.utils import safe_get_full_grad

    engine = trainer.accelerator.deepspeed_engine_wrapped.engine
    step, inner = engine.step, engine.optimizer.optimizer

    def watched_step(*args, **kwargs):
        if engine.is_gradient_accumulation_boundary():
            named = engine.module.named_parameters()
            seen["grads"] = {n: safe_get_full_grad(p).detach().clone() for n, p in named}
        return step(*args, **kwargs)

    inner_step = inner.step

    def watched_inner(*args, **kwargs):
        grads = [p.grad for g in inner.param_groups for p in g["params"] if p.grad is not None]
        seen["clipped_sq"] = seen.get("clipped_sq", 0.0) + sum(
            float(g.double().pow(2).sum()) for g in grads
        )
        seen["inner_steps"] = seen.get("inner_steps", 0) + 1
        return inner_step(*args, **kwargs)

    engine.step, inner.step = watched_step, watched_inner


def main(out_path: str, per_device: int, accumulation: int, max_grad_norm: float) -> None:
    trainer = _trainer(out_path, per_device, accumulation, max_grad_norm)
    seen: dict = {}
    if trainer.deepspeed:
        _watch_deepspeed(trainer, seen)
    else:
        trainer.parts.optimizer.zero_grad = lambda set_to_none=True: None  # keep the gradient
    output = next(train_round(trainer.parts, trainer.draw_rows(), trainer.draw_rows))
    model = trainer.accelerator.unwrap_model(trainer.model)
    if not trainer.deepspeed:
        seen["grads"] = {n: p.grad.clone() for n, p in model.named_parameters()}
        seen["clipped_sq"] = sum(float(g.double().pow(2).sum()) for g in seen["grads"].values())
        seen["inner_steps"] = 1
    clipped = sum(gather_object([seen["clipped_sq"]]))  # the partitions' squares add up
    result = {
        "grads": seen["grads"],
        "grad_norm": output.metrics["grad_norm"],
        "clipped_norm": clipped**0.5,
        "optimizer_steps": sum(gather_object([seen["inner_steps"]]))
        / trainer.accelerator.num_processes,
        "weights": {n: _full(trainer, p) for n, p in model.named_parameters()},
        "distributed_type": str(trainer.accelerator.distributed_type),
    }
    if trainer.accelerator.is_main_process:
        torch.save(result, out_path)


def _full(trainer: Trainer, param: torch.Tensor) -> torch.Tensor:
    """The whole parameter (ZeRO-3 holds a shard: `safe_get_full_fp32_param` gathers it)."""
    if trainer.deepspeed:
        from deepspeed.utils import safe_get_full_fp32_param

        return safe_get_full_fp32_param(param).detach().clone()
    return param.detach().clone()


def _leave_together() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]))
    _leave_together()
