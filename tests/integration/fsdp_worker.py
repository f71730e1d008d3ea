"""Run by torchrun in `test_fsdp.py`: one training step of the real trainer on the crafted batch
of `grad_worker.py`, saving (process 0) the step's full gradient, its reported norm and how the
parameters were sharded. With `ACCELERATE_USE_FSDP` unset it is the plain 1-process reference.
`sample OUT`: the trainer's own sampler on the FSDP model, process 0's completions ending at
once and process 1's never, saving every process's completion lengths.

accelerate (1.15) turns FSDP on only for accelerator backends: on CPU (`ACCELERATE_USE_CPU`,
gloo) it drops the FSDP plugin and wraps the model in DDP, silently. `lift_cpu_gate` sets
accelerate's shared state as it would on GPUs, before the trainer makes its `Accelerator`, so
all that follows (`prepare`, `no_sync`, `backward`, `clip_grad_norm_`) is accelerate's FSDP2
path; torch's `fully_shard` itself runs on CPU with gloo.
"""

import os
import sys

import torch
from grad_worker import crafted_step
from torch.distributed.fsdp import FSDPModule

from aapo.training.config import TrainConfig
from aapo.training.trainer import Trainer


def lift_cpu_gate() -> None:
    """Let accelerate's FSDP plugin (from the FSDP_* variables) act on a CPU/gloo run."""
    if os.environ.get("ACCELERATE_USE_FSDP", "false").lower() != "true":
        return
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, PartialState
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

    state = Accelerator().state
    if state.distributed_type == DistributedType.FSDP:
        return  # a later accelerate that shards on CPU by itself
    if state.distributed_type != DistributedType.MULTI_CPU:
        raise RuntimeError(f"expected a CPU run, got {state.distributed_type}")
    for shared in (PartialState(), AcceleratorState()):
        shared.distributed_type = DistributedType.FSDP
    AcceleratorState().fsdp_plugin = FullyShardedDataParallelPlugin()


def full(tensor: torch.Tensor) -> torch.Tensor:
    """The whole tensor: a DTensor shard is gathered (a collective: every process calls it)."""
    from torch.distributed.tensor import DTensor

    return tensor.full_tensor() if isinstance(tensor, DTensor) else tensor


def main(out_path: str, per_device: int, accumulation: int, max_grad_norm: float) -> None:
    lift_cpu_gate()
    trainer, output = crafted_step(out_path, per_device, accumulation, max_grad_norm=max_grad_norm)
    model = trainer.accelerator.unwrap_model(trainer.model)
    named = list(model.named_parameters())
    grads = {name: full(p.grad).clone() for name, p in named}
    result = {
        "grads": grads,
        "grad_norm": output.metrics["grad_norm"],
        "distributed_type": str(trainer.accelerator.distributed_type),
        "local_numel": {name: getattr(p, "_local_tensor", p).numel() for name, p in named},
        "full_numel": {name: g.numel() for name, g in grads.items()},
        "fsdp_units": sum(isinstance(m, FSDPModule) for m in model.modules()),
    }
    if trainer.accelerator.is_main_process:
        torch.save(result, out_path)


def sample(out_path: str) -> None:
    """Every forward of a sharded model is a collective, so a process whose completions all end
    must keep stepping until the others' do (transformers' synced generation), or both hang."""
    from accelerate.utils import gather_object

    from aapo.rollout import SamplingParams

    lift_cpu_gate()
    config = TrainConfig(
        num_generations=2, max_completion_length=24, dataset_size=64, report_to=[],
        output_dir=out_path + ".run",
    )  # fmt: skip
    trainer = Trainer(config)
    sampler = trainer.policy_sampler
    early = trainer.accelerator.process_index == 0
    sampler.eos_ids = list(range(len(trainer.tokenizer))) if early else [-1]  # all or none
    rows = trainer.draw_rows()[:2]
    groups = sampler.generate([row.prompt_ids for row in rows], SamplingParams(2, 1.0, 1.0, 24))
    lengths = gather_object([[len(s.completion_ids) for g in groups for s in g]])
    if trainer.accelerator.is_main_process:
        torch.save(lengths, out_path)


def train(output_dir: str, resume: bool) -> None:
    """Two optimizer steps with a checkpoint after the first, or only the second, resumed."""
    lift_cpu_gate()
    config = TrainConfig(
        num_generations=4, per_device_train_batch_size=8, max_steps=2, save_steps=1,
        max_completion_length=24, dataset_size=64, report_to=[], output_dir=output_dir,
        resume_from_checkpoint="latest" if resume else None,
    )  # fmt: skip
    Trainer(config).train()


def _leave_together() -> None:
    """Both processes reach a barrier, then tear the process group down, so neither exits
    while the other's gloo threads still talk to it (an abort at exit, seen once in CI)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    if sys.argv[1] == "sample":
        sample(sys.argv[2])
    elif sys.argv[1] == "train":
        train(sys.argv[2], resume=len(sys.argv) > 3)
    else:
        main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]))
    _leave_together()
