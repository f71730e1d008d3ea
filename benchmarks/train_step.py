"""Seconds per training step on the bundled model, per algorithm, and where the time goes.

Fixed configuration: 8 prompts × 8 completions, 64 new tokens, one optimizer step per batch.
Prints a line per algorithm and, last, one JSON object: median seconds per step after a
warm-up step, the split (policy generation, reference generation, rewards, update), completion
tokens per second, and peak resident memory of the process.

`--reference-cache` measures what precomputing the reference buys: it builds a
reference cache once for the prompts the timed steps use (`aapo reference`; its one-off cost
per prompt, set-up apart, beside in-step reference sampling per prompt), then times GRPO, AAPO
sampling its reference in the step, and AAPO reading the cache, their steps interleaved, on
the same prompts. It stops with an error if the trainer's reference is not the cache.

    python benchmarks/train_step.py [--steps 3] [--algorithms aapo,grpo]
    python benchmarks/train_step.py --reference-cache [--steps 3]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from aapo.training.config import TrainConfig
from aapo.training.reference import CachedReference
from aapo.training.reference.build import build_reference_cache
from aapo.training.step import train_round
from aapo.training.trainer import Trainer

SPLIT = ("time/policy_generation", "time/reference_generation", "time/rewards", "time/update")
PROMPTS_PER_STEP = 8


def _config(algorithm: str, steps: int, output_dir: str, **changes) -> TrainConfig:
    values = dict(
        algorithm=algorithm,
        num_generations=8,
        per_device_train_batch_size=16,
        gradient_accumulation_steps=4,
        max_completion_length=64,
        max_steps=steps + 1,
        learning_rate=1e-5,
        report_to=[],
        output_dir=output_dir,
        dataset_size=200,
    )
    return TrainConfig(**{**values, **changes})


def measure_interleaved(configs: dict[str, TrainConfig], steps: int) -> dict[str, dict]:
    """Each config's trainer takes its steps in turn (step 1 of every run, then step 2, ...),
    so drifts in the machine's load fall on every run alike."""
    trainers = {name: Trainer(config) for name, config in configs.items()}
    for name, trainer in trainers.items():
        if configs[name].reference_cache and not isinstance(
            trainer.parts.reference, CachedReference
        ):
            raise RuntimeError(f"{name}: the reference is sampled despite reference_cache")
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in trainers}
    for _ in range(steps + 1):
        for name, t in trainers.items():
            runs[name].append(next(train_round(t.parts, t.draw_rows(), t.draw_rows)).metrics)
    return {name: _summary(metrics[1:]) for name, metrics in runs.items()}


def _summary(timed: list[dict[str, float]]) -> dict[str, float]:
    """Medians over the timed steps (the first step pays one-off costs: grader start-up,
    allocator warm-up)."""
    seconds = statistics.median(m["time/step"] for m in timed)
    tokens = statistics.median(m["num_tokens"] for m in timed)
    result = {"seconds_per_step": seconds, "tokens_per_second": tokens / seconds}
    result.update(
        {
            key.removeprefix("time/"): statistics.median(m.get(key, 0.0) for m in timed)
            for key in SPLIT
        }
    )
    return result


def _show(name: str, result: dict[str, float]) -> None:
    print(f"{name}: {', '.join(f'{k} {v:.3f}' for k, v in result.items())}", flush=True)


def per_algorithm(algorithms: list[str], steps: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        configs = {name: _config(name, steps, str(Path(tmp) / name)) for name in algorithms}
        results = measure_interleaved(configs, steps)
    for name, result in results.items():
        _show(name, result)
    return {"config": "8 prompts x 8 completions, 64 new tokens, fp32 CPU", "algorithms": results}


def _timed_build(config: TrainConfig) -> float:
    started = time.perf_counter()
    build_reference_cache(config, process_index=0, num_processes=1)
    return time.perf_counter() - started


def with_reference_cache(steps: int) -> dict:
    """GRPO, AAPO (in-step reference) and AAPO (cached reference) on the same prompts."""
    size = (steps + 1) * PROMPTS_PER_STEP  # one epoch is exactly the timed steps: 1 draw each
    with tempfile.TemporaryDirectory() as tmp:
        cache = str(Path(tmp) / "reference")
        precompute = _config("aapo", steps, tmp, dataset_size=size, reference_cache=cache)
        # start the grader and warm the allocator on a throwaway cache, as the timed steps
        # come after a warm-up step; a real build pays this once for the whole dataset
        warm_up = replace(precompute, dataset_size=PROMPTS_PER_STEP, reference_draws=1)
        start_up_seconds = _timed_build(replace(warm_up, reference_cache=cache + "-warm-up"))
        build_seconds = _timed_build(precompute)
        setup_seconds = _timed_build(precompute)  # complete already: load, hash, check only
        configs = {
            name: _config(algorithm, steps, str(Path(tmp) / name), dataset_size=size, **changes)
            for name, algorithm, changes in (
                ("grpo", "grpo", {}),
                ("aapo", "aapo", {}),
                ("aapo_cached", "aapo", {"reference_cache": cache}),
            )
        }
        results = measure_interleaved(configs, steps)
        for name, result in results.items():
            _show(name, result)
    in_step = results["aapo"]["reference_generation"] / PROMPTS_PER_STEP
    summary = {
        "precompute_start_up_seconds": start_up_seconds,
        "precompute_seconds": build_seconds,
        "precompute_setup_seconds": setup_seconds,
        "precompute_seconds_per_prompt": (build_seconds - setup_seconds) / size,
        "in_step_reference_generation_seconds_per_prompt": in_step,
        "aapo_cached_over_grpo": results["aapo_cached"]["seconds_per_step"]
        / results["grpo"]["seconds_per_step"],
        "aapo_over_grpo": results["aapo"]["seconds_per_step"] / results["grpo"]["seconds_per_step"],
    }
    print(", ".join(f"{k} {v:.3f}" for k, v in summary.items()), flush=True)
    return {
        "config": f"8 prompts x 8 completions, 64 new tokens, fp32 CPU, {size} prompts; "
        "precompute per prompt: sample + score + write after a warm-up build (start-up and "
        "setup = model load, hashing, checks: reported apart), reference_batch_size 256",
        "reference_cache": summary,
        "algorithms": results,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3, help="timed steps after one warm-up step")
    parser.add_argument("--algorithms", default="aapo,grpo,dr_grpo,dapo,gpg")
    parser.add_argument(
        "--reference-cache",
        action="store_true",
        help="precompute the reference once; time GRPO, AAPO and AAPO reading the cache",
    )
    args = parser.parse_args()
    if args.reference_cache:
        report = with_reference_cache(args.steps)
    else:
        report = per_algorithm(args.algorithms.split(","), args.steps)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"config": report.pop("config"), "peak_rss_mb": round(peak_mb, 1), **report}))


if __name__ == "__main__":
    main()
