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


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="HF model id or local path")
    parser.add_argument("--benchmarks", default="auto", help="as in aapo eval --benchmarks")
    parser.add_argument("--data_dir", default=None, help="folder of the benchmark .jsonl files")
    parser.add_argument("--limit", type=int, default=None, help="first N problems of each")
    parser.add_argument("--system_prompt", default=None, help="r1_think, simplerl or text")
    parser.add_argument("--prompt_template", default="auto", help="eval_math, plain, auto, text")
    parser.add_argument("--num_samples", type=int, default=1, help="k completions per problem")
    parser.add_argument("--temperature", type=float, default=0.6)
    parser.add_argument("--top_p", type=float, default=0.95)
    parser.add_argument("--max_new_tokens", type=int, default=4096)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument(
        "--llm_options", type=json.loads, default={},
        help='JSON of extra vllm.LLM arguments, e.g. \'{"tensor_parallel_size": 2}\'',
    )  # fmt: skip
    parser.add_argument("--output", required=True, type=Path, help="the .jsonl to write")
    parser.add_argument("--dry_run", action="store_true", help="write the prompts only")
    args = parser.parse_args(argv)
    if args.output.suffix != ".jsonl":
        parser.error(f"--output must end in .jsonl, got {args.output}")
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


def import_vllm() -> Any:
    """vllm, or exit with how to install it (before any prompt is built)."""
    try:
        import vllm
    except ImportError:
        sys.exit(f"error: {NO_VLLM}")
    return vllm


def sample(vllm: Any, args: argparse.Namespace, rows: list[dict], prompts: list[list[int]]) -> None:
    """Add `completions`, `truncated` and `completion_tokens` to each row with vLLM."""
    from vllm.inputs import TokensPrompt

    from aapo.models import resolve_model_path

    llm = vllm.LLM(model=resolve_model_path(args.model), seed=args.seed, **args.llm_options)
    params = vllm.SamplingParams(
        n=args.num_samples, temperature=args.temperature,
        top_p=args.top_p if args.temperature > 0 else 1.0,
        max_tokens=args.max_new_tokens, seed=args.seed,
    )  # fmt: skip
    outputs = llm.generate([TokensPrompt(prompt_token_ids=p) for p in prompts], params)
    for row, output in zip(rows, outputs, strict=True):  # vLLM keeps the prompts' order
        row["completions"] = [c.text for c in output.outputs]
        row["truncated"] = [c.finish_reason == "length" for c in output.outputs]
        row["completion_tokens"] = [len(c.token_ids) for c in output.outputs]


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    vllm = None if args.dry_run else import_vllm()
    rows, prompts = build_rows(args)
    if vllm is not None:
        sample(vllm, args, rows, prompts)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    with args.output.open("w", encoding="utf-8") as handle:
        handle.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    what = "prompts (dry run, no completions)" if args.dry_run else "rows with completions"
    print(f"wrote {len(rows)} {what} to {args.output}")
    if not args.dry_run:
        print(f"grade them with: aapo eval --completions {args.output}")


if __name__ == "__main__":
    main()
