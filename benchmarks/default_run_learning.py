"""Does the main job learn? `aapo train` with no arguments, over seeds, at 1×, 2× and ½× its rate.

    python benchmarks/default_run_learning.py                 # 3 seeds, 2 jobs at once
    python benchmarks/default_run_learning.py --seeds 5 --stability-seeds 2 --jobs 1 --out DIR

Each learning rate is one `aapo compare --algorithms aapo` over seeds 1..N on the default
config (so every run is an ordinary run directory, finished runs are kept and a killed one
resumes); the 1× runs sit under `OUT/lr-1x/aapo/seed-S`, which is where `aapo compare
--output_dir OUT/lr-1x` would put them. Prints held-out greedy accuracy before → after per
seed (the run's own check on 250 test-side problems), the gain's mean and minimum, each run's
wall time, and checks the default run's targets:

- at 1×: mean gain ≥ 15 points, every seed ≥ 8 points, every run ≤ 300 s;
- at 2× and ½×: no collapse, i.e. no seed ends below where it started.

With `--jobs 2` each run gets one of the two cores, so the wall time is that of a run on one
core while another runs beside it (a conservative reading of "5 minutes on 2 cores").
Exit status 1 when a target is missed. Left out: other algorithms (`aapo compare` does those).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

from aapo.config import load_config
from aapo.training.config import TrainConfig

SCALES = {"1x": 1.0, "2x": 2.0, "0.5x": 0.5}
MEAN_GAIN, MIN_GAIN, MAX_SECONDS = 0.15, 0.08, 300.0


def run_scale(out: Path, scale: float, seeds: int, jobs: int) -> list[dict]:
    """The summaries of `aapo compare --algorithms aapo` at `scale` × the default rate."""
    rate = load_config(TrainConfig, "default").learning_rate * scale
    command = [sys.executable, "-m", "aapo", "compare", "--algorithms", "aapo"]
    command += ["--seeds", str(seeds), "--jobs", str(jobs), "--output_dir", str(out)]
    command += ["--learning_rate", repr(rate)]
    subprocess.run(command, check=True)
    paths = [out / "aapo" / f"seed-{seed}" / "summary.json" for seed in range(1, seeds + 1)]
    return [json.loads(path.read_text()) for path in paths]


def describe(name: str, summaries: list[dict]) -> tuple[list[float], list[float]]:
    """Print one table row per seed; the gains and the wall times."""
    gains, seconds = [], []
    for seed, s in enumerate(summaries, start=1):
        before, after = s["held_out_accuracy_before"], s["held_out_accuracy_after"]
        gains.append(after - before)
        seconds.append(s["seconds"])
        print(
            f"{name:5} seed {seed}: {before:.3f} -> {after:.3f} ({100 * gains[-1]:+.1f} pts)"
            f" in {s['seconds']:.0f} s"
        )
    print(
        f"{name:5} mean gain {100 * statistics.mean(gains):+.1f} pts, "
        f"min {100 * min(gains):+.1f} pts"
    )
    return gains, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--stability-seeds", type=int, help="seeds at 2x and 0.5x; default --seeds")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("runs/default-learning"))
    args = parser.parse_args()
    stability = args.stability_seeds or args.seeds
    results = {
        name: run_scale(
            args.out / f"lr-{name}", scale, args.seeds if scale == 1 else stability, args.jobs
        )
        for name, scale in SCALES.items()
    }
    failures = []
    for name, summaries in results.items():
        gains, seconds = describe(name, summaries)
        if name == "1x":
            if statistics.mean(gains) < MEAN_GAIN or min(gains) < MIN_GAIN:
                failures.append(f"1x: gains {[round(g, 3) for g in gains]}")
            if max(seconds) > MAX_SECONDS:
                failures.append(f"1x: a run took {max(seconds):.0f} s > {MAX_SECONDS:.0f} s")
        elif min(gains) < 0:
            failures.append(f"{name}: a seed ended below its start ({min(gains):+.3f})")
    print("targets met" if not failures else "targets missed: " + "; ".join(failures))
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
