"""The trainer's vLLM engines (`sampler: vllm`): built from the run's config, kept in step with
the policy.

Colocated (`vllm_mode: colocate`, TRL's name): one in-process engine per training process,
seeded with the run's seed plus the process index, so DDP processes draw distinct samples and
stay in lock-step (each samples its own share of prompts, then the step gathers); each call's
seed comes from the process's torch RNG, which the trainer seeds per process too. Under a
launch vLLM forms its (one-worker) process groups over the trainer's world, so starting an
engine is a collective: every process starts its engines, in the same order (tested with 2
CPU processes, gloo: tests/integration/test_vllm_training.py). The policy's
engine starts from the weights the policy loads; `EngineSync` pushes the policy's current
weights into it whenever an optimizer step has changed them, before a generation batch and
before the held-out check, and resets its prefix cache (KV blocks of the old weights). Under
LoRA the adapters are merged into a copy, never into the trained model; under FSDP every
weight is gathered whole on every process first. AAPO's reference, when sampled, is a second
engine on the initial weights that nothing ever syncs (`reference_engine_sampler`).

Checked before any weights load (`check_vllm_options`): vLLM importable (else one line with the
install command), an architecture vLLM serves, a length the model has positions for, options
that exist on this platform (tensor parallelism and memory fractions are GPU-only).
On CPU the engine's KV cache is sized from the run (its sequences × lengths) and it computes on
torch's thread pool at the trainer's thread count: sampling and updates alternate, so the two
never compete for cores. Left out: `vllm_mode: server` (a separate vLLM server over HTTP), sleep
mode (vLLM has none on CPU), pipeline parallelism.
"""

from __future__ import annotations

import copy
import json
import logging
import time
from pathlib import Path
from typing import Any

import torch

from aapo.config import ConfigError
from aapo.models import resolve_dtype
from aapo.rollout.vllm_sampler import VLLMSampler
from aapo.training.config import TrainConfig

log = logging.getLogger("aapo")


def check_vllm_options(config: TrainConfig, model_path: str, device: str) -> None:
    """Refuse, naming the option, what the engine cannot do here; call before loading weights."""
    if config.vllm_mode != "colocate":
        raise ConfigError(
            f"vllm_mode {config.vllm_mode!r} is not implemented: use vllm_mode colocate (one "
            "in-process engine per training process)"
        )
    try:
        from aapo.rollout.vllm_engine import import_vllm

        vllm = import_vllm()
    except ImportError as err:
        raise ConfigError(f"sampler vllm: {err}") from None
    on_gpu = torch.device(device).type == "cuda"
    if not on_gpu and config.vllm_tensor_parallel_size != 1:
        raise ConfigError(
            f"vllm_tensor_parallel_size {config.vllm_tensor_parallel_size}: the in-process CPU "
            "engine runs on one worker; use 1"
        )
    if resolve_dtype(config.dtype, device) == torch.float16 and not on_gpu:
        raise ConfigError("dtype float16: vLLM's CPU build serves float32 and bfloat16")
    model_config = _model_config(model_path)
    architectures = model_config.get("architectures") or []
    supported = set(vllm.ModelRegistry.get_supported_archs())
    if not any(name in supported for name in architectures):
        raise ConfigError(
            f"sampler vllm: vLLM {vllm.__version__} does not serve architecture "
            f"{architectures or '(none named in config.json)'} of {model_path}; use sampler group"
        )
    positions = _positions(model_config)
    length = max_model_length(config, positions)
    if positions is not None and length > positions:
        raise ConfigError(
            f"vllm_max_model_length {length} exceeds the {positions} positions of {model_path}"
        )


def max_model_length(config: TrainConfig, positions: int | None) -> int:
    """The engine's longest prompt + completion: the option, else what the run can need
    (within the model's positions)."""
    if config.vllm_max_model_length is not None:
        return config.vllm_max_model_length
    wanted = config.max_prompt_length + config.max_completion_length
    return wanted if positions is None else min(wanted, positions)


def engine_sampler(
    config: TrainConfig, model_path: str, device: str, seed: int, sequences: int
) -> VLLMSampler:
    """An engine on the weights at `model_path`, sized for `sequences` sequences at once."""
    positions = _positions(_model_config(model_path))
    options: dict[str, Any] = {
        "max_model_len": max_model_length(config, positions),
        "max_num_seqs": max(1, sequences),
        "num_threads": torch.get_num_threads(),  # the trainer's share of the cores
        "enable_prefix_caching": config.vllm_enable_prefix_caching,
    }
    if torch.device(device).type == "cuda":  # the engine sizes its cache itself there
        options["gpu_memory_utilization"] = config.vllm_gpu_memory_utilization
        options["tensor_parallel_size"] = config.vllm_tensor_parallel_size
    dtype = str(resolve_dtype(config.dtype, device)).removeprefix("torch.")
    return VLLMSampler(model_path, seed=seed, dtype=dtype, **options)


class EngineSync:
    """Keeps an engine's weights equal to the trained policy's: `__call__` pushes them when an
    optimizer step has changed them since the last push, and returns the seconds it took (0.0
    when nothing changed). The scheduler's step count tells, and a resumed run's restored
    count differs from the engine's, so its first call pushes the checkpoint's weights."""

    def __init__(self, engine: Any, model: Any, scheduler: Any, accelerator: Any) -> None:
        self.engine, self.model, self.scheduler, self.accelerator = (
            engine,
            model,
            scheduler,
            accelerator,
        )
        self.synced_at = scheduler.last_epoch  # the engine was built from these weights

    def __call__(self) -> float:
        version = self.scheduler.last_epoch
        if version == self.synced_at:
            return 0.0
        start = time.perf_counter()
        self.engine.sync_weights(policy_weights(self.model, self.accelerator))
        self.synced_at = version
        return time.perf_counter() - start


def policy_weights(model: Any, accelerator: Any) -> Any:
    """What the engine should hold: the policy unwrapped; under FSDP every weight gathered
    whole on every process (a collective); under LoRA a merged copy, the trained model's
    adapters left as they are."""
    from torch.distributed.fsdp import FSDPModule

    if any(isinstance(module, FSDPModule) for module in model.modules()):
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        options = StateDictOptions(full_state_dict=True, cpu_offload=False)
        return get_model_state_dict(model, options=options)
    policy = accelerator.unwrap_model(model)
    if hasattr(policy, "merge_and_unload"):  # peft
        return copy.deepcopy(policy).merge_and_unload()
    return policy


def _model_config(model_path: str) -> dict[str, Any]:
    path = Path(model_path) / "config.json"
    if not path.is_file():
        return {}  # a hub id: vLLM resolves it, and reports what it cannot serve
    return json.loads(path.read_text(encoding="utf-8"))


def _positions(model_config: dict[str, Any]) -> int | None:
    text = model_config.get("text_config", model_config)
    value = text.get("max_position_embeddings")
    return int(value) if isinstance(value, int) else None
