"""The named parts a `Trainer` is assembled from, one small builder each.

Each builder takes the validated config (and what earlier builders made) and returns one part:
the rewards, the training data, the policy, the reference (where its rollouts come from, chosen
once here: `reference_source`, `build_reference`), the optimizer and scheduler, the samplers,
the loss and sampling settings, and the estimator's options. The trainer calls them in a fixed
order, and every check that needs no weights runs before `build_policy` loads them: a
mistyped reward, a bad dataset, and the checks in preflight.py (prompts plus completions
beyond the model's context, an output disk without room for the run).

Left out: the training loop and checkpoints (trainer.py, checkpoint.py) and the step itself
(step.py).
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal

import torch

from aapo.algorithms import (
    AdvantageEstimator,
    Algorithm,
    get_algorithm,
    get_policy_loss,
    policy_loss_uses_ratio,
)
from aapo.config import ConfigError
from aapo.data.datasets import load_problems
from aapo.data.rows import PromptRow, prepare_rows
from aapo.models import PrecisionPlan, load_model
from aapo.rewards import configure_default_grader, reward_parameters
from aapo.rewards.scoring import RewardScorer
from aapo.rollout import SAMPLERS, Sampler, SamplingParams
from aapo.training import deepspeed_engine, scheduler
from aapo.training.config import BatchLayout, TrainConfig
from aapo.training.logprobs import adapter_disabled_logprobs, packed_logprobs
from aapo.training.reference import CachedReference, Reference, SampledReference
from aapo.training.reference.cache import ReferenceCache, describe_source, reference_fingerprint
from aapo.training.reference.frozen import AdapterDisabledSampler, frozen_copy
from aapo.training.update import LossSettings, MicroBatch

log = logging.getLogger("aapo")


def prepare_config(config: TrainConfig) -> TrainConfig:
    """Import the user's plug-ins (they register estimators, losses, rewards), then let the
    algorithm's defaults (e.g. DAPO's epsilon_high) fill options the user left unset: those
    not in `config.explicit` (not in the YAML, not on the command line, not passed to
    `TrainConfig(...)`). The result counts every option as given, so preparing it again
    changes nothing."""
    for module in config.imports:
        importlib.import_module(module)
    algorithm = get_algorithm(config.algorithm)
    return replace(
        config, **{k: v for k, v in algorithm.defaults.items() if k not in config.explicit}
    )


def build_accelerator(precision: PrecisionPlan) -> Any:
    """accelerate's Accelerator with the plan's mixed precision. accelerate fixes mixed
    precision once per process, so a later run in the same process (a notebook, the test
    suite) with another dtype first resets that part of its state."""
    from accelerate import Accelerator, DistributedType
    from accelerate.state import AcceleratorState

    shared = AcceleratorState._shared_state
    if shared and shared.get("_mixed_precision") != precision.mixed_precision:
        AcceleratorState._reset_state()
    extra = deepspeed_engine.accelerator_kwargs() if deepspeed_engine.requested() else {}
    accelerator = Accelerator(mixed_precision=precision.mixed_precision, **extra)
    if deepspeed_engine.requested():
        deepspeed_engine.check_accelerator(accelerator)
    asked = os.environ.get("ACCELERATE_USE_FSDP", "").lower() in ("1", "true", "yes")
    if asked and accelerator.distributed_type != DistributedType.FSDP:
        raise ConfigError(
            f"accelerate was asked for FSDP but runs {accelerator.distributed_type.value}: "
            "accelerate shards models only on GPUs, and on CPU this would silently be DDP"
        )
    return accelerator


def advantage_options(config: TrainConfig, estimator: AdvantageEstimator) -> dict[str, Any]:
    """The estimator's keyword options, picked from the config by the estimator's own
    signature, plus `advantage_kwargs` for options that are not config keys."""
    known = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
    accepts = estimator.accepts  # None: the estimator takes **kwargs
    options = {k: v for k, v in known.items() if accepts is not None and k in accepts}
    unknown = [] if accepts is None else sorted(set(config.advantage_kwargs) - accepts)
    if unknown:
        raise ValueError(
            f"advantage_kwargs {unknown} are not options of estimator {estimator.name!r} "
            f"(it takes {sorted(accepts)})"
        )
    return {**options, **config.advantage_kwargs}


def build_scorer(
    config: TrainConfig, functions: Mapping[str, Callable[..., list]] | None = None
) -> RewardScorer:
    """The weighted reward functions: `functions` (name → callable) when given, else the
    config's `reward_funcs` by name or import path."""
    # a grading batch must give up before the scorer abandons the reward call around it
    configure_default_grader(batch_timeout=max(1.0, 0.8 * config.reward_timeout))
    if functions is None:  # user functions by import path run in killable worker processes
        try:
            return RewardScorer.from_specs(
                config.reward_funcs,
                {spec: _reward_params(spec, config) for spec in config.reward_funcs},
                config.reward_weights,
                config.reward_timeout,
                imports=config.imports,
            )
        except (ValueError, TypeError) as err:  # unknown name, bad import path or parameters
            raise ConfigError(f"reward_funcs: {err}") from err
    weights = config.reward_weights
    if weights is not None and len(weights) != len(functions):
        raise ValueError(f"{len(weights)} reward_weights for {len(functions)} reward functions")
    return RewardScorer(list(functions), list(functions.values()), weights, config.reward_timeout)


def _reward_params(spec: str, config: TrainConfig) -> dict[str, Any]:
    """The user's parameters; a length-aware reward's cap defaults to max_completion_length."""
    params = dict(config.reward_kwargs.get(spec, {}))
    if "max_length" in reward_parameters(spec) and "max_length" not in params:
        params["max_length"] = config.max_completion_length
    return params


@dataclass(frozen=True)
class TrainData:
    """The prepared prompts and how many steps they make."""

    rows: list[PromptRow]
    skipped_prompts: int  # longer than max_prompt_length
    steps_per_epoch: int  # optimizer steps
    total_steps: int

    @property
    def epochs_started(self) -> int:
        """The most times the run meets one prompt (at most once per epoch)."""
        return math.ceil(self.total_steps / self.steps_per_epoch)

    def epoch_prompts(self, layout: BatchLayout) -> int:
        """Prompts an epoch uses: whole generation batches (the remainder waits a turn)."""
        return len(self.rows) // layout.generation_prompts * layout.generation_prompts


def encode_rows(
    rows: list[dict], tokenizer: Any, config: TrainConfig
) -> tuple[list[PromptRow], int]:
    """`prepare_rows` with the run's prompt settings: what training and every check see."""
    prompt = (config.system_prompt, config.prompt_template, config.max_prompt_length)
    return prepare_rows(rows, tokenizer, *prompt, config.prompt_examples)


def build_data(config: TrainConfig, tokenizer: Any, layout: BatchLayout) -> TrainData:
    """The prompts, encoded; refused (ConfigError) when they do not fill one generation batch."""
    rows = load_problems(
        config.dataset_name,
        config.dataset_split,
        config.seed,
        config.dataset_size,
        config.synthetic_levels,
    )
    prepared, skipped = encode_rows(rows, tokenizer, config)
    batches_per_epoch = len(prepared) // layout.generation_prompts
    if batches_per_epoch == 0:
        skipped_note = f" ({skipped} longer than max_prompt_length skipped)" if skipped else ""
        raise ConfigError(
            f"{len(prepared)} usable prompts{skipped_note} is fewer than the "
            f"{layout.generation_prompts} one generation batch draws over "
            f"{layout.generation_prompts // layout.generation_prompts_per_process} processes: "
            "use more data or a smaller batch (per_device_train_batch_size, "
            "steps_per_generation)"
        )
    steps_per_epoch = batches_per_epoch * layout.steps_per_generation_batch
    total = (
        config.max_steps
        if config.max_steps > 0
        else math.ceil(config.num_train_epochs * steps_per_epoch)
    )
    return TrainData(prepared, skipped, steps_per_epoch, total)


def build_policy(config: TrainConfig, model_path: str, dtype: torch.dtype, device: Any) -> Any:
    """The model to train: loaded in `dtype` (float32: the optimizer's master weights),
    optionally checkpointed, optionally with LoRA adapters."""
    model = load_model(model_path, dtype, device)
    if config.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    return _with_lora(model, config) if config.use_peft else model


ReferenceSource = Literal["sampled", "cached"] | None


def reference_source(config: TrainConfig, estimator: AdvantageEstimator) -> ReferenceSource:
    """Where the reference rollouts come from: None when the estimator needs none, the cache
    when `reference_cache` names one, else the frozen model sampled in the step."""
    if not estimator.needs_reference:
        if config.reference_cache is not None:
            log.warning("reference_cache is set but %s samples no reference", estimator.name)
        return None
    return "cached" if config.reference_cache is not None else "sampled"


def build_frozen_model(config: TrainConfig, policy: Any, sampled: bool) -> Any | None:
    """A frozen copy of the initial weights when the reference is sampled from it or the KL
    term needs it; None under LoRA, where the reference is the adapter-disabled base, and when
    a vLLM engine samples the reference without a KL term."""
    sampled_here = sampled and config.sampler != "vllm"
    if config.use_peft or not (sampled_here or config.beta > 0):
        return None
    return frozen_copy(policy)


def build_reference(
    source: ReferenceSource,
    scorer: RewardScorer,
    cache: ReferenceCache | None,
    sampler: Callable[[], Sampler],
) -> Reference | None:
    """The step's one reference part: rollouts read from `cache`, or sampled with the sampler
    that `sampler()` builds over the frozen model (called only then)."""
    if source == "cached":
        assert cache is not None, "a cached reference needs its opened cache"
        return CachedReference(cache)
    if source == "sampled":
        return SampledReference(sampler(), scorer)
    return None


def open_reference_cache(
    config: TrainConfig,
    reference: Any,
    data: TrainData,
    tokenizer: Any,
    reward_names: list[str] | None = None,
) -> ReferenceCache:
    """The precomputed reference rollouts, checked against this run: every setting they
    depend on (computed from the initial weights, so call it before any update), the run's
    reward names and enough draws for the epochs the run starts."""
    fingerprint = reference_fingerprint(config, reference, data.rows, tokenizer)
    problems = [row.problem for row in data.rows]
    cache = ReferenceCache.open(config.reference_cache, fingerprint, problems, reward_names)
    cache.require_draws(data.epochs_started)
    if cache.source is not None:
        log.warning("reference rewards: %s", describe_source(cache.source))
    return cache


def build_optimizer(config: TrainConfig, model: Any) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.AdamW(
        params,
        lr=config.learning_rate,
        betas=(config.adam_beta1, config.adam_beta2),
        weight_decay=config.weight_decay,
    )


def build_scheduler(config: TrainConfig, optimizer: Any, total_steps: int) -> Any:
    """The scheduler `TrainConfig` checked (training/scheduler.py), over the run's steps."""
    return scheduler.build_scheduler(
        config.lr_scheduler_type,
        config.lr_scheduler_kwargs,
        optimizer,
        config.warmup_ratio,
        total_steps,
    )


def build_sampler(
    config: TrainConfig, model: Any, tokenizer: Any, max_batch_size: int = 256
) -> Sampler:
    """The rollout sampler the config names, over `model`. A model sharded by FSDP needs
    every process to run each forward pass (a collective) until all have finished, which
    transformers' `generate` does and GroupSampler does not: it samples with `hf` then."""
    name = config.sampler
    if name != "hf" and _is_sharded(model):
        log.warning("sampler %r cannot keep FSDP processes in step; sampling with hf", name)
        name = "hf"
    return SAMPLERS[name](model, tokenizer, max_batch_size=max_batch_size)


def _is_sharded(model: Any) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return any(isinstance(module, FSDPModule) for module in model.modules())


def sampling_params(config: TrainConfig) -> SamplingParams:
    """What the policy and the reference sample with, every step."""
    return SamplingParams(
        config.num_generations, config.temperature, config.top_p, config.max_completion_length
    )


def loss_settings(config: TrainConfig, algorithm: Algorithm) -> LossSettings:
    """The loss every optimizer step runs: the algorithm's policy loss and aggregation (the
    config may override the aggregation), clipping and KL settings."""
    return LossSettings(
        loss_fn=get_policy_loss(algorithm.policy_loss),
        aggregation=config.loss_aggregation or algorithm.aggregation,
        temperature=config.temperature,
        epsilon_low=config.epsilon,
        epsilon_high=config.epsilon_high,
        beta=config.beta,
        max_completion_length=config.max_completion_length,
        max_grad_norm=config.max_grad_norm,
        share_prompts=shares_prompts(config),
        uses_ratio=policy_loss_uses_ratio(algorithm.policy_loss),
        is_cap=(
            config.vllm_importance_sampling_cap
            if config.vllm_importance_sampling_correction
            else None
        ),
    )


def shares_prompts(config: TrainConfig) -> bool:
    """Whether the loss computes a group's prompt once (a prefill whose KV cache the
    completions read). Not under gradient checkpointing, whose layers drop the cache in
    training; the no-gradient passes (old and reference log-probs) share prompts either way."""
    return not config.gradient_checkpointing


def build_policy_sampler(
    config: TrainConfig, policy: Any, tokenizer: Any, model_path: str, accelerator: Any
) -> Sampler:
    """The policy's sampler: over the live model, or (sampler vllm) an engine loaded from the
    same weights, which `build_engine_sync` keeps in step."""
    if config.sampler != "vllm":
        return build_sampler(config, policy, tokenizer)
    from aapo.training import rollout_engine

    seed = config.seed + accelerator.process_index  # distinct streams per process
    return rollout_engine.engine_sampler(
        config, model_path, accelerator.device.type, seed, _engine_sequences(config)
    )


def build_engine_sync(
    config: TrainConfig, sampler: Sampler, model: Any, scheduler: Any, accelerator: Any
) -> Callable[[], float] | None:
    """What keeps the policy's engine on the trained weights; None for live-model samplers
    (and for an injected sampler with no engine)."""
    engine = getattr(sampler, "engine", None)
    if config.sampler != "vllm" or engine is None:
        return None
    from aapo.training.rollout_engine import EngineSync

    return EngineSync(engine, model, scheduler, accelerator)


def build_reference_sampler(
    config: TrainConfig,
    policy_sampler: Sampler,
    policy: Any,
    reference_model: Any,
    tokenizer: Any,
    model_path: str,
    accelerator: Any,
) -> Sampler:
    """Samples of π_ref: the frozen copy, the policy with its LoRA adapters disabled, or
    (sampler vllm) a second engine on the initial weights that is never synced."""
    if config.sampler == "vllm":
        from aapo.training import rollout_engine

        seed = config.seed + accelerator.num_processes + accelerator.process_index
        return rollout_engine.engine_sampler(
            config, model_path, accelerator.device.type, seed, _engine_sequences(config)
        )
    if config.use_peft:
        return AdapterDisabledSampler(policy_sampler, policy)
    return build_sampler(config, reference_model, tokenizer)


def _engine_sequences(config: TrainConfig) -> int:
    """Sequences an engine decodes at once: a process's generation batch, all its groups."""
    layout = config.batch_layout()
    return layout.generation_prompts_per_process * config.num_generations


def build_reference_logprobs(
    config: TrainConfig, policy: Any, reference_model: Any | None
) -> Callable[[MicroBatch], torch.Tensor] | None:
    """log π_ref of a micro-batch's completions for the KL term (beta > 0): from the frozen
    copy, or, under LoRA, from the same model with its adapters disabled."""
    if config.beta <= 0:
        return None

    def reference(mb: MicroBatch) -> torch.Tensor:
        if config.use_peft:
            return adapter_disabled_logprobs(policy, mb.batch, config.temperature)
        return packed_logprobs(reference_model, mb.batch, config.temperature)

    return reference


def _with_lora(model: Any, config: TrainConfig) -> Any:
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError as err:
        raise ImportError("use_peft needs peft: pip install aapo[peft]") from err
    lora = LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=config.lora_target_modules,
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, lora)
