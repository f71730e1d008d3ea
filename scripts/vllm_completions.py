"""Sample k completions per problem with vLLM and write a file for `aapo eval --completions`.

    pip install vllm    # Linux with a CUDA GPU
    python scripts/vllm_completions.py --model deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B \\
        --benchmarks math500,aime24 --data_dir data/benchmarks --num_samples 16 \\
        --max_new_tokens 32768 --output r1-1.5b.jsonl
    aapo eval --completions r1-1.5b.jsonl --model_name R1-Distill-1.5B

The prompts are built by aapo's own evaluation code (benchmark rows, `--prompt_template`,
`--system_prompt`, the tokenizer's chat template with the generation prompt), so they are the
token ids `aapo eval` would feed the model; they reach vLLM as `TokensPrompt`s, which avoids a
second BOS from re-tokenising rendered text. Sampling: `vllm.SamplingParams(n=k, temperature,
top_p, max_tokens, seed)`, the paper's defaults (T 0.6, top-p 0.95) as in `aapo eval`.
Each output row holds benchmark, id, level, problem, answer, prompt (decoded with special
tokens, as samples.jsonl shows it), and per sample `completions` (vLLM's detokenised text),
`truncated` (finish_reason "length") and `completion_tokens` (len(token_ids), as vLLM counts).

The reference file for AAPO (`aapo reference --completions`, README "Reference completions
from vLLM"): `--reference_for RECIPE_OR_YAML [--train_options key=value ...]` writes one row
per training prompt of that train config instead (the rows `aapo train` prepares: problem,
answer, and the prompt as the model sees it), samples reference_draws × num_generations
completions of each (reference_draws unset: one draw per epoch the run starts) with the
config's temperature, top_p and max_completion_length, and adds `completion_ids` (vLLM's token
ids, the stopping EOS included) so lengths and length rewards are exact:
    python scripts/vllm_completions.py --reference_for aapo_1.5b --output ref.jsonl
    aapo reference --config aapo_1.5b --completions ref.jsonl --reference_cache ref-cache
    aapo train --config aapo_1.5b --reference_cache ref-cache
The model is the config's model_name_or_path (`--model` only where the same weights live
under another name); aapo cannot check which weights vLLM ran, and the cache says so.

`--dry_run` builds the prompts and writes the rows without completions (no vLLM needed), to
check the prompts or to feed another engine. vLLM is imported only for a real run; this
script has NOT been run with vLLM in aapo's own test suite (vLLM cannot be installed on the
machines aapo is built on), only its prompt building and argument handling are tested.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

NO_VLLM = (
    "vllm_completions.py needs vLLM for sampling: pip install vllm (Linux with a CUDA GPU); "
    "--dry_run writes the prompts without it"
)


EVAL_DEFAULTS = {
    "benchmarks": "auto", "prompt_template": "auto", "num_samples": 1, "temperature": 0.6,
    "top_p": 0.95, "max_new_tokens": 4096,
}  # fmt: skip
EVAL_ONLY = ("benchmarks", "data_dir", "limit", "system_prompt", "prompt_template",
             "num_samples", "temperature", "top_p", "max_new_tokens")  # fmt: skip


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="HF model id or local path")
    parser.add_argument("--benchmarks", default=None, help="as in aapo eval --benchmarks")
    parser.add_argument("--data_dir", default=None, help="folder of the benchmark .jsonl files")
    parser.add_argument("--limit", type=int, default=None, help="first N problems of each")
    parser.add_argument("--system_prompt", default=None, help="r1_think, simplerl or text")
    parser.add_argument("--prompt_template", default=None, help="eval_math, plain, auto, text")
    parser.add_argument("--num_samples", type=int, default=None, help="k completions per problem")
    parser.add_argument("--temperature", type=float, default=None)
    parser.add_argument("--top_p", type=float, default=None)
    parser.add_argument("--max_new_tokens", type=int, default=None)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument(
        "--reference_for", default=None, metavar="RECIPE_OR_YAML",
        help="write the reference file of this train config (aapo reference --completions)",
    )  # fmt: skip
    parser.add_argument(
        "--train_options", nargs="*", default=[], metavar="KEY=VALUE",
        help="train config overrides for --reference_for, as aapo train takes them",
    )  # fmt: skip
    parser.add_argument(
        "--llm_options", type=json.loads, default={},
        help='JSON of extra vllm.LLM arguments, e.g. \'{"tensor_parallel_size": 2}\'',
    )  # fmt: skip
    parser.add_argument("--output", required=True, type=Path, help="the .jsonl to write")
    parser.add_argument("--dry_run", action="store_true", help="write the prompts only")
    args = parser.parse_args(argv)
    if args.output.suffix != ".jsonl":
        parser.error(f"--output must end in .jsonl, got {args.output}")
    if args.reference_for is None:
        if args.model is None:
            parser.error("--model is required (or --reference_for a train config)")
        for name, value in EVAL_DEFAULTS.items():
            setattr(args, name, value if getattr(args, name) is None else getattr(args, name))
    else:
        given = [f"--{name}" for name in EVAL_ONLY if getattr(args, name) is not None]
        if given:
            parser.error(f"{', '.join(given)}: with --reference_for the train config sets the "
                         "prompts and sampling (change them with --train_options)")  # fmt: skip
    return args


def build_rows(args: argparse.Namespace) -> tuple[list[dict[str, Any]], list[list[int]]]:
    """One row per problem (no completions yet) and its prompt token ids, as `aapo eval`
    builds them."""
    from aapo.evaluation import EvalConfig, load_benchmark
    from aapo.evaluation.harness import benchmark_names, build_tasks
    from aapo.models import load_tokenizer, resolve_model_path
    from aapo.rewards import Grader

    # EvalConfig checks the values as aapo eval does
    config = EvalConfig(
        model=args.model, benchmarks=[args.benchmarks], data_dir=args.data_dir,
        limit=args.limit, system_prompt=args.system_prompt,
        prompt_template=args.prompt_template, num_samples=args.num_samples,
        temperature=args.temperature, top_p=args.top_p,
        max_new_tokens=args.max_new_tokens, seed=args.seed,
    )  # fmt: skip
    tokenizer = load_tokenizer(resolve_model_path(args.model))
    one = dataclasses.replace(config, num_samples=1)  # vLLM draws the k samples (n=k)
    rows, prompts = [], []
    with Grader() as grader:
        for name in benchmark_names(config):
            bench = load_benchmark(name, config.data_dir, config.limit, False, grader)
            for task in build_tasks(bench, one, tokenizer):
                item = task.item
                rows.append({"benchmark": bench.name, "id": item.id, "level": item.level,
                             "problem": item.problem, "answer": item.answer,
                             "prompt": task.prompt})  # fmt: skip
                prompts.append(list(task.prompt_ids))
    return rows, prompts


def build_reference_rows(
    args: argparse.Namespace,
) -> tuple[list[dict[str, Any]], list[list[int]], dict[str, Any]]:
    """One row per training prompt of the train config, its prompt ids, and the sampling the
    reference cache needs (D·G completions per prompt at the config's settings)."""
    from aapo.config import load_config
    from aapo.models import load_tokenizer, resolve_model_path
    from aapo.training import builders
    from aapo.training.config import TrainConfig

    config = builders.prepare_config(
        load_config(TrainConfig, args.reference_for, args.train_options)
    )
    args.model = args.model or config.model_name_or_path
    tokenizer = load_tokenizer(resolve_model_path(config.model_name_or_path))
    data = builders.build_data(config, tokenizer, config.batch_layout(1))
    rows = []
    for row in data.rows:
        gold = {"answer": row.columns["answer"]} if "answer" in row.columns else {}
        rows.append({"id": row.source, "problem": row.problem, **gold,
                     "prompt": row.rendered_prompt})  # fmt: skip
    draws = config.reference_draws or data.epochs_started
    sampling = {"n": draws * config.num_generations, "temperature": config.temperature,
                "top_p": config.top_p, "max_tokens": config.max_completion_length}  # fmt: skip
    return rows, [list(row.prompt_ids) for row in data.rows], sampling


def import_vllm() -> Any:
    """vllm, or exit with how to install it (before any prompt is built)."""
    try:
        import vllm
    except ImportError:
        sys.exit(f"error: {NO_VLLM}")
    return vllm


def sample(
    vllm: Any, args: argparse.Namespace, rows: list[dict], prompts: list[list[int]], sampling: dict
) -> None:
    """Add `completions`, `truncated` and `completion_tokens` (and for a reference file
    `completion_ids`) to each row with vLLM."""
    from vllm.inputs import TokensPrompt

    from aapo.models import resolve_model_path

    llm = vllm.LLM(model=resolve_model_path(args.model), seed=args.seed, **args.llm_options)
    if sampling["temperature"] == 0:
        sampling = {**sampling, "top_p": 1.0}
    params = vllm.SamplingParams(**sampling, seed=args.seed)
    outputs = llm.generate([TokensPrompt(prompt_token_ids=p) for p in prompts], params)
    for row, output in zip(rows, outputs, strict=True):  # vLLM keeps the prompts' order
        row["completions"] = [c.text for c in output.outputs]
        row["truncated"] = [c.finish_reason == "length" for c in output.outputs]
        row["completion_tokens"] = [len(c.token_ids) for c in output.outputs]
        if args.reference_for is not None:
            row["completion_ids"] = [list(c.token_ids) for c in output.outputs]


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    vllm = None if args.dry_run else import_vllm()
    if args.reference_for is None:
        rows, prompts = build_rows(args)
        sampling = {"n": args.num_samples, "temperature": args.temperature,
                    "top_p": args.top_p, "max_tokens": args.max_new_tokens}  # fmt: skip
    else:
        rows, prompts, sampling = build_reference_rows(args)
    if vllm is not None:
        sample(vllm, args, rows, prompts, sampling)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    with args.output.open("w", encoding="utf-8") as handle:
        handle.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    what = "prompts (dry run, no completions)" if args.dry_run else "rows with completions"
    print(f"wrote {len(rows)} {what} to {args.output}")
    if args.dry_run:
        return
    if args.reference_for is None:
        print(f"grade them with: aapo eval --completions {args.output}")
    else:
        options = " ".join(f"--{o.replace('=', ' ', 1)}" for o in args.train_options)
        print(f"import them with: aapo reference --config {args.reference_for} {options} "
              f"--completions {args.output} --reference_cache DIR")  # fmt: skip


if __name__ == "__main__":
    main()
