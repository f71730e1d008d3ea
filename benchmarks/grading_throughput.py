"""Grading throughput: completions per second through the `accuracy` reward, batches of 64.

    PYTHONPATH=src python benchmarks/grading_throughput.py [--num-workers 1] [--limit 0]

Each gold answer of the benchmark files in ../shared/data/benchmarks (synthetic golds when the
folder is absent) becomes a right completion, `<think>…</think> <answer> \\boxed{gold} </answer>`,
and a wrong one (the gold of another problem); with `--think-chars` of reasoning text before
the answer, as a model would write. The completions are shuffled with a fixed seed and scored
batch by batch with a fresh grader (a cold cache: every completion is new to it), after its
workers have started. Prints completions/s and the p50 / p99 seconds of one reward call (one
batch), then one JSON line with the same figures.

Left out: repeated answers within a group, which the grader deduplicates (real training
batches grade faster than this), and the time to start the workers (once per process).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from collections import Counter
from pathlib import Path

from aapo.rewards import AccuracyReward, Grader

DEFAULT_DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "benchmarks"
FILES = ("math500", "aime24", "amc23", "minerva_math", "olympiadbench")
FILLER = "Let me think about this step by step, checking each intermediate result. "


def load_golds(data_dir: Path) -> tuple[list[str], str]:
    golds = []
    for name in FILES:
        path = data_dir / f"{name}.jsonl"
        if path.exists():
            with path.open(encoding="utf-8") as handle:
                golds += [json.loads(line)["answer"] for line in handle if line.strip()]
    if golds:
        return golds, str(data_dir.resolve())
    rng = random.Random(0)
    synthetic = [f"\\frac{{{rng.randint(1, 99)}}}{{{rng.randint(2, 99)}}}" for _ in range(300)]
    synthetic += [str(rng.randint(0, 10**6)) for _ in range(300)]
    synthetic += [f"[{rng.randint(-9, 0)}, {rng.randint(1, 9)})" for _ in range(100)]
    return synthetic, "synthetic"


def build(golds: list[str], think_chars: int, seed: int) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    think = (FILLER * (think_chars // len(FILLER) + 1))[:think_chars]
    others = golds[:]
    rng.shuffle(others)
    pairs = []
    for gold, other in zip(golds, others, strict=True):
        pairs.append((f"<think>\n{think}\n</think>\n<answer> \\boxed{{{gold}}} </answer>", gold))
        if other != gold:
            pairs.append(
                (f"<think>\n{think}\n</think>\n<answer> \\boxed{{{other}}} </answer>", gold)
            )
    rng.shuffle(pairs)
    return pairs


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--num-workers", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=5.0)
    parser.add_argument("--think-chars", type=int, default=4000)
    parser.add_argument("--limit", type=int, default=0, help="grade at most this many; 0 = all")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    golds, source = load_golds(args.data_dir)
    pairs = build(golds, args.think_chars, args.seed)
    if args.limit:
        pairs = pairs[: args.limit]
    with Grader(timeout=args.timeout, num_workers=args.num_workers) as grader:
        grader.grade(["\\boxed{1}"] * args.num_workers, ["1"] * args.num_workers)  # start-up
        started = time.perf_counter()
        reward, calls, scores = AccuracyReward(grader=grader), [], Counter()
        for start in range(0, len(pairs), args.batch_size):
            batch = pairs[start : start + args.batch_size]
            t0 = time.perf_counter()
            values = reward(
                prompts=[""] * len(batch),
                completions=[c for c, _ in batch],
                answer=[g for _, g in batch],
            )
            calls.append(time.perf_counter() - t0)
            scores.update(values)
        total = time.perf_counter() - started
        metrics = reward.pop_metrics()
    calls_sorted = sorted(calls)
    result = {
        "completions": len(pairs),
        "completions_per_s": round(len(pairs) / total, 1),
        "batch_size": args.batch_size,
        "num_workers": args.num_workers,
        "p50_s_per_call": round(statistics.median(calls), 4),
        "p99_s_per_call": round(calls_sorted[min(len(calls) - 1, int(0.99 * len(calls)))], 4),
        "max_s_per_call": round(calls_sorted[-1], 4),
        "total_s": round(total, 2),
        "correct": int(scores[1.0]),
        "timeouts": int(metrics["timeouts"]),
        "errors": int(metrics["errors"]),
        "data": source,
    }
    print(
        f"{result['completions']} completions from {source}: "
        f"{result['completions_per_s']} completions/s with {args.num_workers} worker(s); "
        f"per call of {args.batch_size}: p50 {result['p50_s_per_call']}s, "
        f"p99 {result['p99_s_per_call']}s; timeouts {result['timeouts']}, "
        f"errors {result['errors']}",
        flush=True,
    )
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
