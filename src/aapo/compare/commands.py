"""What `aapo compare` and `aapo plot` do, as two functions the CLI calls.

`compare` plans the variants × seeds matrix (validating every job's config first), runs the
jobs that are not finished, then writes `figures/*.png` and `report.md` under the output
directory. `plot` writes the same figures and report from run directories that already exist.

Left out: argument parsing (cli.py).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from aapo.compare.plots import write_figures
from aapo.compare.report import render_report, write_report
from aapo.compare.runner import plan_comparison, run_jobs, sigterm_as_interrupt
from aapo.compare.runs import Run, find_runs, group_runs, load_run
from aapo.compare.variants import CompareError
from aapo.messages import shown

REPORT_FILE = "report.md"
FIGURES_DIR = "figures"


def compare(
    algorithms: str,
    seeds: str,
    config: str,
    options: Sequence[str],
    output_dir: Path,
    jobs: int = 1,
    baseline: str | None = None,
    target: float | None = None,
    smooth: int = 1,
) -> Path:
    """Train what is missing of the matrix, then write figures and report; the report's path."""
    _check_outputs(target, smooth)
    plan = plan_comparison(algorithms, seeds, config, options, output_dir)
    names = [v.name for v in plan.variants]
    if baseline is not None and baseline not in names:
        known = ", ".join(names)
        raise CompareError(f"--baseline {shown(baseline)} is not among --algorithms ({known})")
    with sigterm_as_interrupt():
        results = run_jobs(plan, jobs)
    failed = [r for r in results if r.status == "failed"]
    if failed:
        listed = "; ".join(f"{r.job.name}: {r.message}" for r in failed)
        raise CompareError(
            f"{len(failed)} of {len(results)} runs failed ({listed}); rerun the same command to "
            "retry them (finished runs are kept)"
        )
    runs = [load_run(job.run_dir) for job in plan.jobs]
    groups = {name: sorted((r for r in runs if r.variant == name), key=_seed) for name in names}
    return write_outputs(groups, output_dir, baseline, target, smooth)


def plot(
    paths: Sequence[str | Path],
    output_dir: Path,
    baseline: str | None = None,
    target: float | None = None,
    smooth: int = 1,
) -> Path:
    """Figures and report from existing runs (run directories or compare output directories),
    grouped by variant; the report's path."""
    _check_outputs(target, smooth)
    return write_outputs(group_runs(find_runs(paths)), output_dir, baseline, target, smooth)


def write_outputs(
    groups: dict[str, list[Run]],
    output_dir: Path,
    baseline: str | None,
    target: float | None,
    smooth: int,
) -> Path:
    """`figures/*.png` and `report.md` under `output_dir`; the report's path."""
    if not groups:
        raise CompareError("no runs to report on")
    figures = write_figures(groups, output_dir / FIGURES_DIR, smooth)
    report_path = output_dir / REPORT_FILE
    return write_report(report_path, render_report(groups, figures, report_path, baseline, target))


def _check_outputs(target: float | None, smooth: int) -> None:
    if target is not None and not (math.isfinite(target) and 0 <= target <= 1):
        raise CompareError(f"--target must be an accuracy in [0, 1], got {target}")
    if smooth < 1:
        raise CompareError(f"--smooth must be >= 1 (steps in the trailing mean), got {smooth}")


def _seed(run: Run) -> int:
    return run.seed
