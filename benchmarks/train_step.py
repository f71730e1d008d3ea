"""Seconds per training step on the bundled model, per algorithm, and where the time goes.

Fixed configuration: 8 prompts × 8 completions, 64 new tokens, one optimizer step per batch.
Prints a line per algorithm and, last, one JSON object: median seconds per step after a
warm-up step, the split (policy generation, reference generation, rewards, update), completion
tokens per second, and peak resident memory of the process.

    python benchmarks/train_step.py [--steps 3] [--algorithms aapo,grpo]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import tempfile

from aapo.training.config import TrainConfig
from aapo.training.step import train_step
from aapo.training.trainer import Trainer

SPLIT = ("time/policy_generation", "time/reference_generation", "time/rewards", "time/update")


def measure(algorithm: str, steps: int, output_dir: str) -> dict[str, float]:
    config = TrainConfig(
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
    trainer = Trainer(config)
    runs = [train_step(trainer.parts, trainer.batch_rows(step)) for step in range(steps + 1)]
    timed = runs[1:]  # the first step pays one-off costs (grader start-up, allocator warm-up)
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3, help="timed steps after one warm-up step")
    parser.add_argument("--algorithms", default="aapo,grpo,dr_grpo,dapo,gpg")
    args = parser.parse_args()
    results = {}
    for algorithm in args.algorithms.split(","):
        with tempfile.TemporaryDirectory() as tmp:
            results[algorithm] = measure(algorithm, args.steps, tmp)
        shown = ", ".join(f"{k} {v:.2f}" for k, v in results[algorithm].items())
        print(f"{algorithm}: {shown}", flush=True)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        json.dumps(
            {
                "config": "8 prompts x 8 completions, 64 new tokens, fp32 CPU",
                "peak_rss_mb": round(peak_mb, 1),
                "algorithms": results,
            }
        )
    )


if __name__ == "__main__":
    main()
