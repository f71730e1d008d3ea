"""Does AAPO beat GRPO on the bundled task? The study of issue 21, seeds added until it knows.

    python benchmarks/aapo_vs_grpo_study.py                   # the study, into runs/study
    python benchmarks/aapo_vs_grpo_study.py --out /tmp/smoke --first 2 --max-seeds 2 \\
        --eval-final 20 -- --max_steps 2 --eval_num_problems 10     # a smoke run, minutes

docs/STUDY.md is its design. Each batch is one `aapo compare --algorithms
aapo,aapo_noclip,grpo,gpg --seeds N --jobs 2` on the default recipe, with the final held-out
check on `--eval-final` problems (1,000) and the periodic one every `--eval-steps` steps (10) on
the recipe's 250; options after `--` go to every run. N starts at `--first` (the fewest seeds
the rule may stop at) and grows by `--batch` until the stopping rule (aapo.compare.stopping)
stops: the paired 95% Student-t interval of aapo - grpo final held-out accuracy has half-width
<= `--half-width` (0.025: 2.5 points), or `--max-seeds` is reached. The rule reads only the
interval's width, never its position.

After each batch it appends the decision to OUT/stopping.jsonl and rewrites OUT/stopping.md
(what it decided and why, batch by batch); `aapo compare` rewrites OUT/report.md and
OUT/figures/. Rerunning the same command is safe: finished runs are kept, a killed one resumes
from its checkpoint, and the decisions are replayed from the runs, so it goes on where it
stopped. Exit status 0 when the width was reached, 1 when the seed budget ran out first.

Left out: the reading of the results (docs/STUDY.md's results section is written by hand).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from aapo.compare import compare
from aapo.compare.report import by_seed, final_accuracy
from aapo.compare.runs import load_run
from aapo.compare.stopping import Decision, decide

VARIANTS = "aapo,aapo_noclip,grpo,gpg"
VARIANT, BASELINE = "aapo", "grpo"  # the difference the stopping rule reads
DECISIONS, SUMMARY = "stopping.jsonl", "stopping.md"


def differences(out: Path, seeds: int) -> list[float]:
    """Final held-out accuracy of aapo minus grpo, seed by seed, for seeds 1..`seeds`."""
    runs = {
        name: [load_run(out / name / f"seed-{seed}") for seed in range(1, seeds + 1)]
        for name in (VARIANT, BASELINE)
    }
    variant, baseline = (
        by_seed(runs[VARIANT], final_accuracy),
        by_seed(runs[BASELINE], final_accuracy),
    )
    missing = sorted(set(range(1, seeds + 1)) - (set(variant) & set(baseline)))
    if missing:
        raise SystemExit(
            f"no final held-out accuracy for seeds {missing} of {VARIANT} or {BASELINE}"
        )
    return [variant[s] - baseline[s] for s in range(1, seeds + 1)]


def record(out: Path, decision: Decision, args: argparse.Namespace, report: Path) -> dict:
    interval = decision.interval
    entry = {
        "time": time.strftime("%Y-%m-%d %H:%M:%S"),
        "seeds": decision.seeds,
        "difference": f"{VARIANT} - {BASELINE}",
        "mean": interval.mean,
        "low": interval.low,
        "high": interval.high,
        "half_width": interval.half_width,
        "target_half_width": args.half_width,
        "projected_seeds": decision.projected,
        "stop": decision.stop,
        "reason": decision.reason,
        "report": str(report),
    }
    with (out / DECISIONS).open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(entry) + "\n")
    return entry


def write_summary(out: Path, entries: list[dict], command: list[str]) -> Path:
    lines = [
        "# Stopping decisions",
        "",
        f"Command: `{' '.join(command)}`",
        "",
        f"The rule reads the paired 95% Student-t interval of {VARIANT} - {BASELINE} final "
        "held-out accuracy (aapo.compare.stopping); accuracies in points.",
        "",
        "| seeds | mean | 95% interval | half-width | projected seeds | decision |",
        "|---|---|---|---|---|---|",
    ]
    for e in entries:
        lines.append(
            f"| {e['seeds']} | {100 * e['mean']:+.2f} | [{100 * e['low']:+.2f}, "
            f"{100 * e['high']:+.2f}] | ±{100 * e['half_width']:.2f} | "
            f"{e['projected_seeds'] or '–'} | {e['reason']} |"
        )
    path = out / SUMMARY
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    own, extra = (
        (argv[: argv.index("--")], argv[argv.index("--") + 1 :]) if "--" in argv else (argv, [])
    )
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("runs/study"))
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument(
        "--first",
        type=int,
        default=6,
        help="seeds of the first batch: the fewest the rule may stop at",
    )
    parser.add_argument("--batch", type=int, default=2, help="seeds added per batch")
    parser.add_argument("--max-seeds", type=int, default=20)
    parser.add_argument(
        "--half-width", type=float, default=0.025, help="accuracy, 0.025 = 2.5 points"
    )
    parser.add_argument("--eval-final", type=int, default=1000, help="problems in the final check")
    parser.add_argument("--eval-steps", type=int, default=10, help="steps between periodic checks")
    args = parser.parse_args(own)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    least = min(args.first, args.max_seeds)
    options = [
        "--eval_final_num_problems",
        str(args.eval_final),
        "--eval_steps",
        str(args.eval_steps),
        *extra,
    ]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / DECISIONS).unlink(missing_ok=True)  # replayed from the runs below
    command = [Path(sys.argv[0]).as_posix(), *argv]
    entries, seeds = [], least
    while True:
        report = compare(
            VARIANTS,
            str(seeds),
            "default",
            options,
            args.out,
            jobs=args.jobs,
            baseline=BASELINE,
            smooth=5,
        )
        decision = decide(
            differences(args.out, seeds), args.half_width, args.batch, least, args.max_seeds
        )
        entries.append(record(args.out, decision, args, report))
        write_summary(args.out, entries, command)
        print(f"{seeds} seeds: {decision.reason}", flush=True)
        if decision.stop:
            break
        seeds = decision.next_seeds
    return 0 if decision.interval.half_width <= args.half_width else 1


if __name__ == "__main__":
    sys.exit(main())
