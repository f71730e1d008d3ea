"""`TrainConfig`: every option of `aapo train`, documented once, with TRL's names.

Batch arithmetic follows TRL: `per_device_train_batch_size` counts completions in one
micro-batch on one process; one optimizer step consumes `per_device_train_batch_size ×
gradient_accumulation_steps × num_processes` completions, which is `num_generations` (G)
completions for each of B prompts, all sampled before the step. Everything is validated here,
so the trainer can trust it.
"""

from __future__ import annotations

import math
import typing
from dataclasses import dataclass, field
from typing import Any, Literal

from aapo.algorithms import AGGREGATION_MODES, GPG_NORMS, SCALE_REWARDS
from aapo.models import DTYPES
from aapo.rollout import SAMPLERS

# closed choices, written once in the modules that implement them
ScaleRewards = Literal[SCALE_REWARDS]
GpgNorm = Literal[GPG_NORMS]
Aggregation = Literal[AGGREGATION_MODES]
Dtype = Literal[("auto", *DTYPES)]
Sink = Literal["tensorboard", "wandb", "none"]
SamplerName = Literal[tuple(SAMPLERS)]


def _doc(default: Any, text: str) -> Any:
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": text})
    return field(default=default, metadata={"help": text})


@dataclass
class TrainConfig:
    # what to train
    model_name_or_path: str = _doc(
        "bundled", "HF model id or local path; `bundled` = the shipped tiny model."
    )
    dtype: Dtype = _doc(
        "auto",
        "auto (fp32 on CPU; bf16 autocast on GPU), float32, bfloat16 or float16 (GPU only): "
        "parameters and optimizer state stay float32 (master weights), compute runs under "
        "autocast in this dtype, and the final model is saved in it.",
    )
    imports: list[str] = _doc(
        [], "Python modules imported first; they may register estimators, losses or rewards."
    )
    algorithm: str = _doc("aapo", "aapo, grpo, dr_grpo, dapo, gpg, or any registered algorithm.")
    advantage_estimator: str | None = _doc(
        None, "Override the algorithm's advantage estimator by registered name."
    )
    # data
    dataset_name: str = _doc(
        "synthetic", "`synthetic` (bundled task), a .jsonl/.parquet path, or a `datasets` name."
    )
    dataset_split: str = _doc("train", "Split to train on (for `datasets` names and `synthetic`).")
    dataset_size: int = _doc(2000, "Number of problems generated for the `synthetic` dataset.")
    system_prompt: str | None = _doc(
        None, "A paper prompt name (r1_think, simplerl) or literal text; null = none."
    )
    prompt_template: str = _doc(
        "plain", "User-turn template by name (plain, eval_math) or text with {problem}."
    )
    # sampling
    num_generations: int = _doc(
        8, "G: completions per prompt (and reference completions, for AAPO)."
    )
    max_prompt_length: int = _doc(
        512, "Prompts longer than this (in tokens) are skipped at load time, counted."
    )
    max_completion_length: int = _doc(64, "New-token cap per completion.")
    temperature: float = _doc(
        1.0, "Sampling temperature for policy and reference; the loss uses logits / T too."
    )
    top_p: float = _doc(1.0, "Nucleus sampling for policy and reference.")
    sampler: SamplerName = _doc(
        "group",
        "group (one prefill per prompt, finished rows leave the batch) or hf "
        "(transformers' generate: the reference implementation).",
    )
    # optimisation
    learning_rate: float = _doc(1e-6, "Peak learning rate (AdamW).")
    lr_scheduler_type: str = _doc(
        "constant",
        "A transformers scheduler: constant, linear, cosine, cosine_with_min_lr, ...",
    )
    lr_scheduler_kwargs: dict = _doc({}, "Extra scheduler arguments, e.g. {min_lr_rate: 0.1}.")
    warmup_ratio: float = _doc(0.0, "Fraction of steps spent warming the learning rate up.")
    weight_decay: float = _doc(0.0, "AdamW weight decay.")
    adam_beta1: float = _doc(0.9, "AdamW beta1.")
    adam_beta2: float = _doc(0.999, "AdamW beta2.")
    max_grad_norm: float = _doc(1.0, "Gradient clipping norm (0 disables).")
    per_device_train_batch_size: int = _doc(8, "Completions per micro-batch per process.")
    gradient_accumulation_steps: int = _doc(8, "Micro-batches per optimizer step.")
    steps_per_generation: int | None = _doc(
        None,
        "Micro-batches per process that one generation batch feeds (TRL's meaning); a "
        "multiple of gradient_accumulation_steps; null = gradient_accumulation_steps.",
    )
    num_iterations: int = _doc(
        1, "μ: passes over each generation batch (the ratio and its clip act from the second)."
    )
    max_steps: int = _doc(-1, "Optimizer steps; -1 = derive from num_train_epochs.")
    num_train_epochs: float = _doc(1.0, "Passes over the dataset when max_steps is -1.")
    seed: int = _doc(42, "Seeds data order, sampling and initialisation.")
    # the algorithm's knobs (each estimator or loss takes the ones it names)
    beta: float = _doc(0.0, "KL coefficient (k3 estimator against the reference model); 0 = no KL.")
    epsilon: float = _doc(0.2, "Lower clip of the probability ratio (clipped-surrogate losses).")
    epsilon_high: float | None = _doc(None, "Upper clip; null = epsilon (DAPO sets 0.28).")
    scale_rewards: ScaleRewards = _doc(
        "group", "group, batch or none: what the group-normalised term divides by."
    )
    delta_low: float = _doc(-0.2, "AAPO: lower clip of the advantage momentum.")
    delta_high: float = _doc(0.28, "AAPO: upper clip of the advantage momentum.")
    momentum_clip: bool = _doc(
        True, "AAPO: clip the momentum (false = the paper's w/o-clip ablation)."
    )
    gpg_norm: GpgNorm = _doc("1", "GPG: F_norm, `1` or `std`.")
    gpg_alpha: bool = _doc(True, "GPG: scale by alpha = B / (B - M), M = tied groups.")
    advantage_kwargs: dict = _doc(
        {}, "Extra keyword options for the advantage estimator (e.g. a registered one's own)."
    )
    loss_aggregation: Aggregation | None = _doc(
        None, "Override: token_mean, sequence_mean or constant."
    )
    dynamic_sampling: bool = _doc(
        False, "DAPO: drop groups whose rewards all tie and draw new prompts to fill the batch."
    )
    min_informative_fraction: float = _doc(
        0.0, "GPG: draw new prompts while fewer than this fraction of groups are untied."
    )
    max_sampling_rounds: int = _doc(
        4, "Cap on sampling rounds per batch for those two; then tied groups fill the batch."
    )
    mask_truncated_completions: bool = _doc(
        False, "Leave completions that hit the length cap out of the loss."
    )
    # rewards
    reward_funcs: list[str] = _doc(
        ["format", "accuracy"], "Reward names (format, accuracy, cosine) or import paths."
    )
    reward_weights: list[float] | None = _doc(
        None, "One weight per reward function; null = all 1.0."
    )
    reward_kwargs: dict = _doc({}, "Per-function parameters, e.g. {cosine: {max_length: 3584}}.")
    reward_timeout: float = _doc(
        30.0, "Seconds a reward call may take before it is skipped (counted)."
    )
    reference_cache: str | None = _doc(
        None,
        "Directory of precomputed reference rollouts (aapo reference); null = sample the "
        "reference during each step.",
    )
    reference_draws: int | None = _doc(
        None,
        "aapo reference: draws of G completions per prompt; null = what the run's epochs/steps "
        "need.",
    )
    reference_batch_size: int = _doc(
        256, "aapo reference: sequences per generate call (no gradients, so large)."
    )
    # model adapters
    use_peft: bool = _doc(
        False,
        "Train LoRA adapters (aapo[peft]); the reference is the adapter-disabled base.",
    )
    lora_r: int = _doc(16, "LoRA rank.")
    lora_alpha: int = _doc(32, "LoRA alpha.")
    lora_dropout: float = _doc(0.05, "LoRA dropout.")
    lora_target_modules: list[str] | None = _doc(
        None, "Module names for LoRA; null = peft's default for the architecture."
    )
    gradient_checkpointing: bool = _doc(
        False, "Trade compute for memory in the policy forward pass."
    )
    # output
    output_dir: str = _doc("runs/aapo", "Where metrics, checkpoints and the final model go.")
    logging_steps: int = _doc(
        1, "Log metrics every N steps (metrics.jsonl, TensorBoard, progress bar)."
    )
    save_steps: int = _doc(0, "Checkpoint every N steps; 0 = only the final model.")
    save_total_limit: int | None = _doc(2, "Keep at most this many checkpoints; null = all.")
    report_to: list[Sink] = _doc(
        ["tensorboard"], "Extra sinks beside metrics.jsonl: tensorboard, wandb."
    )
    log_completions: bool = _doc(
        False, "Write each logged step's completions, rewards, advantages to completions.jsonl."
    )
    log_completions_max_rows: int = _doc(
        64, "At most this many completions per logged step in completions.jsonl."
    )
    resume_from_checkpoint: str | None = _doc(
        None, "`latest` or a checkpoint path to continue from."
    )
    resume_config_changes: bool = _doc(
        False,
        "Resume even though settings that change the run's course differ from the "
        "checkpoint's (they are listed); without it such a resume is refused.",
    )
    # held-out check
    eval_num_problems: int = _doc(
        0, "Held-out problems scored greedily before and after training; 0 = skip."
    )
    eval_steps: int = _doc(
        0, "Also score them every N steps (metrics eval/accuracy[/level_L]); 0 = ends only."
    )
    eval_max_new_tokens: int | None = _doc(
        None, "Token cap for that check; null = max_completion_length."
    )

    def __post_init__(self) -> None:
        for name in _POSITIVE_INTS:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.num_generations < 2:
            raise ValueError(
                "num_generations must be >= 2: advantages compare completions within a group"
            )
        _check_choices(self)
        layout = self.batch_layout()  # G must divide each process's completions
        if self.save_steps % layout.steps_per_generation_batch:
            raise ValueError(
                f"save_steps = {self.save_steps} must be a multiple of the "
                f"{layout.steps_per_generation_batch} optimizer steps one generation batch "
                "feeds (checkpoints are taken between generation batches)"
            )
        self._check_ranges()
        self._check_rewards()
        if self.delta_low > self.delta_high:
            raise ValueError(
                f"delta_low ({self.delta_low}) must be <= delta_high ({self.delta_high})"
            )
        if self.max_steps == 0 or (self.max_steps < 0 and self.num_train_epochs <= 0):
            raise ValueError("set max_steps > 0, or max_steps -1 with num_train_epochs > 0")
        _check_scheduler(self.lr_scheduler_type)

    def _check_ranges(self) -> None:
        """Every numeric option inside its range, named with its value."""
        checks = [
            ("learning_rate", self.learning_rate > 0, "> 0"),
            (
                "temperature",
                self.temperature > 0,
                "> 0 (sampling needs a temperature; greedy decoding gives no group to compare)",
            ),
            ("top_p", 0 < self.top_p <= 1, "in (0, 1]"),
            ("epsilon", self.epsilon >= 0, ">= 0"),
            ("epsilon_high", self.epsilon_high is None or self.epsilon_high >= 0, ">= 0"),
            ("beta", self.beta >= 0, ">= 0"),
            ("warmup_ratio", 0 <= self.warmup_ratio <= 1, "in [0, 1]"),
            ("weight_decay", self.weight_decay >= 0, ">= 0"),
            ("adam_beta1", 0 <= self.adam_beta1 < 1, "in [0, 1)"),
            ("adam_beta2", 0 <= self.adam_beta2 < 1, "in [0, 1)"),
            ("max_grad_norm", self.max_grad_norm >= 0, ">= 0 (0 disables clipping)"),
            ("reward_timeout", self.reward_timeout > 0, "> 0"),
            ("save_steps", self.save_steps >= 0, ">= 0"),
            (
                "save_total_limit",
                self.save_total_limit is None or self.save_total_limit >= 1,
                ">= 1, or null to keep every checkpoint",
            ),
            ("eval_num_problems", self.eval_num_problems >= 0, ">= 0"),
            ("eval_steps", self.eval_steps >= 0, ">= 0"),
            ("min_informative_fraction", 0 <= self.min_informative_fraction <= 1, "in [0, 1]"),
            ("dataset_size", self.dataset_size >= 1, ">= 1"),
        ]
        for name, ok, allowed in checks:
            value = getattr(self, name)
            if not ok or (isinstance(value, float) and not math.isfinite(value)):
                raise ValueError(f"{name} must be {allowed}, got {value!r}")

    def _check_rewards(self) -> None:
        if not self.reward_funcs:
            raise ValueError("reward_funcs is empty: name at least one reward function")
        if self.reward_weights is not None and len(self.reward_weights) != len(self.reward_funcs):
            raise ValueError(
                f"reward_weights has {len(self.reward_weights)} entries but reward_funcs has "
                f"{len(self.reward_funcs)}"
            )
        for weight in self.reward_weights or []:
            if not math.isfinite(weight):
                raise ValueError(f"reward_weights must be finite, got {self.reward_weights}")
        for key in self.reward_kwargs:
            if key not in self.reward_funcs:
                raise ValueError(f"reward_kwargs names {key!r}, which is not in reward_funcs")
        shadowed = sorted(set(self.advantage_kwargs) & _FIELD_NAMES)
        if shadowed:
            raise ValueError(
                f"advantage_kwargs sets {shadowed}, which are config keys: set them directly"
            )

    def batch_layout(self, num_processes: int = 1) -> BatchLayout:
        """The one place batch sizes are derived (TRL's rules: G divides each process's
        completions, so groups are sampled and scored whole on one process; a generation
        batch feeds whole optimizer steps)."""
        per_process = self.per_device_train_batch_size * self.gradient_accumulation_steps
        if per_process % self.num_generations:
            raise ValueError(
                f"per_device_train_batch_size × gradient_accumulation_steps = {per_process} "
                "completions per process is not a multiple of num_generations = "
                f"{self.num_generations}, so groups would be split across optimizer steps"
            )
        accumulation = self.gradient_accumulation_steps
        micro = self.steps_per_generation or accumulation
        if micro < 1 or micro % accumulation:
            raise ValueError(
                f"steps_per_generation = {micro} must be a positive multiple of "
                f"gradient_accumulation_steps = {accumulation}"
            )
        prompts = per_process // self.num_generations
        rounds = micro // accumulation  # optimizer steps per pass over a generation batch
        return BatchLayout(
            prompts_per_process=prompts,
            prompts_per_step=prompts * num_processes,
            completions_per_step=per_process * num_processes,
            generation_prompts_per_process=prompts * rounds,
            generation_prompts=prompts * rounds * num_processes,
            steps_per_generation_batch=rounds * self.num_iterations,
        )

    def prompts_per_step(self, num_processes: int = 1) -> int:
        """B: distinct prompts per optimizer step."""
        return self.batch_layout(num_processes).prompts_per_step

    def informative_target(self) -> float:
        """The fraction of untied groups a batch is refilled towards (0 = no refilling)."""
        return 1.0 if self.dynamic_sampling else self.min_informative_fraction


@dataclass(frozen=True)
class BatchLayout:
    """How one optimizer step's and one generation batch's work is laid out over processes."""

    prompts_per_process: int  # per optimizer step
    prompts_per_step: int  # B
    completions_per_step: int  # B·G
    generation_prompts_per_process: int  # sampled together, then fed to several steps
    generation_prompts: int
    steps_per_generation_batch: int  # optimizer steps one generation batch feeds (all passes)


_POSITIVE_INTS = (
    "num_generations",
    "max_completion_length",
    "max_prompt_length",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "logging_steps",
    "num_iterations",
    "max_sampling_rounds",
    "log_completions_max_rows",
)
_FIELD_NAMES = frozenset(TrainConfig.__dataclass_fields__)


def _check_choices(config: TrainConfig) -> None:
    """Closed choices (`Literal` fields, alone, optional or in a list) hold allowed values,
    also when the config is built in Python rather than from YAML."""
    for name, hint in typing.get_type_hints(type(config)).items():
        allowed = _literal_values(hint)
        value = getattr(config, name)
        values = value if isinstance(value, list) else [value]
        for item in values:
            if allowed is not None and item is not None and item not in allowed:
                raise ValueError(f"{name} must be one of {list(allowed)}, got {item!r}")


def _literal_values(hint: Any) -> tuple | None:
    if typing.get_origin(hint) is Literal:
        return typing.get_args(hint)
    for arg in typing.get_args(hint):  # Optional[Literal] and list[Literal]
        if typing.get_origin(arg) is Literal:
            return typing.get_args(arg)
    return None


def _check_scheduler(name: str) -> None:
    from transformers.trainer_utils import SchedulerType

    allowed = [kind.value for kind in SchedulerType]
    if name not in allowed:
        raise ValueError(f"lr_scheduler_type must be one of {allowed}, got {name!r}")
