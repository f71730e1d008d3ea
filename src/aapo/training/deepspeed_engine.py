"""DeepSpeed ZeRO-2 under the trainer: what DeepSpeed must be told, and update.py's accelerator
calls mapped onto DeepSpeed's engine.

accelerate sizes DeepSpeed from a dataloader's batch size, and the trainer prepares none;
accelerate also treats every `backward` outside `accumulate()` as an accumulation boundary,
and DeepSpeed divides each loss by its accumulation count before backward and clips at the
boundary. The trainer's loss is already each micro-batch's share of the step's global token
count (update.py), so:

- `configure` writes the run's micro-batch size, accumulation steps, clipping norm and the
  global batch into the DeepSpeed config before `prepare`; a launch config that sets any of
  them to another value is refused, naming both (leave them out, or "auto").
- `DeepSpeedSteps` is the Accelerator as `update.optimizer_step` uses it: a micro-batch
  inside `no_sync` is not a boundary and the one after it is (exactly how update.py marks
  the last micro-batch of an optimizer step), each loss reaches DeepSpeed's backward
  unscaled (`scale_wrt_gas=False`), DeepSpeed steps, clips and zeroes at the boundary, and
  `clip_grad_norm_` returns the norm DeepSpeed measured before clipping, as torch's does.
  The optimizer's and scheduler's own `step` then act as under DDP: accelerate makes the
  former a no-op under DeepSpeed, and the trainer's schedule sets the learning rate.

On a machine without CUDA, DeepSpeed runs its CPU accelerator over a gloo process group
(`accelerator_kwargs`); accelerate would otherwise leave the run without a backend.
Left out: ZeRO stages other than 2 (refused at start; `UNSUPPORTED` says why), checkpoints
(refused at start: aapo's checkpoints hold one whole optimizer state and ZeRO partitions it;
the final model is saved), max_grad_norm 0 (update.py would then read the gradients from the
parameters, which ZeRO has moved into its partitions), and a `deepspeed_config_file` naming
its own optimizer or scheduler (the trainer's AdamW and schedule are the ones used).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import torch

from aapo.config import ConfigError

SUPPORTED_STAGES = (2,)  # the one tested (tests/integration/test_deepspeed.py)
UNSUPPORTED = {
    0: "ZeRO-0 is plain data parallelism (use ddp.yaml).",
    1: "ZeRO-1 is not tested with the trainer (ZeRO-2 is, and also shards the gradients).",
    3: "under ZeRO-3 transformers partitions the weights as they load (accelerate registers "
    "the DeepSpeed config with it), so the frozen reference copied from them is empty, and "
    "sampling (one collective per forward) and the final save (a gather) are not wired.",
}


def requested() -> bool:
    """`accelerate launch` with a DeepSpeed config exports this before the trainer starts."""
    return os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() in ("1", "true", "yes")


def active(accelerator: Any) -> bool:
    from accelerate import DistributedType

    return accelerator.distributed_type == DistributedType.DEEPSPEED


def accelerator_kwargs() -> dict[str, Any]:
    """Accelerator arguments DeepSpeed needs here: gloo where no CUDA device exists."""
    if torch.cuda.is_available():
        return {}
    from accelerate.utils import InitProcessGroupKwargs

    return {"kwargs_handlers": [InitProcessGroupKwargs(backend="gloo")]}


def check_accelerator(accelerator: Any) -> None:
    """Fail, before any model loads, when DeepSpeed was asked for and accelerate runs
    something else, or a ZeRO stage the trainer cannot drive."""
    if not active(accelerator):
        raise ConfigError(
            f"accelerate was asked for DeepSpeed but runs {accelerator.distributed_type.value}: "
            "accelerate drops DeepSpeed under --cpu / ACCELERATE_USE_CPU (on a machine without "
            "CUDA, launch without them: DeepSpeed then uses its CPU accelerator and gloo)"
        )
    stage = accelerator.state.deepspeed_plugin.zero_stage
    if stage not in SUPPORTED_STAGES:
        raise ConfigError(
            f"DeepSpeed ZeRO-{stage} is not supported: {UNSUPPORTED.get(stage, '')} Use "
            "deepspeed_zero2.yaml, or fsdp.yaml to shard the weights"
        )


def check_options(config: Any) -> None:
    """Settings the DeepSpeed path cannot honour, refused before any model loads."""
    if config.max_grad_norm <= 0:
        raise ConfigError(
            "max_grad_norm must be > 0 under DeepSpeed: DeepSpeed clips and reports the "
            "gradient norm; without clipping the trainer would read gradients ZeRO has freed"
        )
    if config.save_steps or config.resume_from_checkpoint:
        raise ConfigError(
            "checkpoints are not supported under DeepSpeed (aapo's checkpoints hold one whole "
            "optimizer state; ZeRO partitions it): set save_steps 0 and do not --resume; the "
            "final model is saved, or train with ddp.yaml / fsdp.yaml"
        )


def configure(accelerator: Any, config: Any) -> None:
    """Write the run's batch, accumulation and clipping into the DeepSpeed config."""
    plugin = accelerator.state.deepspeed_plugin
    micro, steps = config.per_device_train_batch_size, config.gradient_accumulation_steps
    wanted = {
        "train_micro_batch_size_per_gpu": micro,
        "gradient_accumulation_steps": steps,
        "gradient_clipping": config.max_grad_norm,
        "train_batch_size": micro * steps * accelerator.num_processes,
    }
    run_keys = {
        "train_micro_batch_size_per_gpu": "per_device_train_batch_size",
        "gradient_accumulation_steps": "gradient_accumulation_steps",
        "gradient_clipping": "max_grad_norm",
        "train_batch_size": "per_device_train_batch_size × gradient_accumulation_steps × processes",
    }
    clashes = []
    for key, value in wanted.items():
        given = plugin.deepspeed_config.get(key, "auto")
        if given != "auto" and float(given) != float(value):
            clashes.append(f"{key}={given} (the run's {run_keys[key]} gives {value})")
        plugin.deepspeed_config[key] = value
    accelerator.gradient_accumulation_steps = steps  # else accelerate warns of a mismatch
    if clashes:
        raise ConfigError(
            "the DeepSpeed config disagrees with the run: " + "; ".join(clashes) + ". The "
            "trainer sets these from its own config: leave them out of the accelerate / "
            "DeepSpeed config (or set them to auto)"
        )


class DeepSpeedSteps:
    """The Accelerator for `update.optimizer_step` under DeepSpeed; everything else is the
    Accelerator's own."""

    def __init__(self, accelerator: Any) -> None:
        self._accelerator = accelerator
        self._accumulating = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._accelerator, name)

    @contextlib.contextmanager
    def no_sync(self, model: Any) -> Iterator[None]:
        """A micro-batch before the step's last: DeepSpeed accumulates, does not step."""
        self._accumulating = True
        try:
            yield
        finally:
            self._accumulating = False

    def backward(self, loss: torch.Tensor) -> None:
        """DeepSpeed's backward on the loss as given; at a boundary it reduces, clips, steps
        and zeroes the gradients."""
        engine = self._accelerator.deepspeed_engine_wrapped
        engine.backward(loss, sync_gradients=not self._accumulating, scale_wrt_gas=False)

    def clip_grad_norm_(self, parameters: Any, max_norm: float) -> float:
        """The norm DeepSpeed measured at the boundary, before it clipped to `max_norm`."""
        return float(self._accelerator.deepspeed_engine_wrapped.get_global_grad_norm())
