"""The Markdown report of a comparison: held-out accuracy per variant (overall and per
difficulty level) with 95% intervals over seeds and its interquartile mean, the paired difference
to a baseline (Student-t and bootstrap intervals) and the probability of improvement over it,
per level the paired difference and the fraction of tied groups over training, steps to a target
accuracy, the variance of the training loss (and where it says nothing), the fraction of tied
groups, AAPO's momentum share of the advantage mass, the figures.

Each quantity is computed per run, then summarised over seeds (stats.py). The final held-out
accuracy is the run's `held_out_accuracy_after` (summary.json) or else its last
`eval_final/accuracy` (the final check, when it had its own size), else its last
`eval/accuracy`; per level likewise from `eval_final/accuracy/level_<L>`, else
`eval/accuracy/level_<L>`. Steps to target use held-out accuracy when the runs logged it during
training, else training accuracy smoothed over `TRAIN_WINDOW` steps (said so in the report). A
result is reported as it is: the paired table says "no clear difference" whenever the interval
contains 0.

Left out: the figures themselves (plots.py).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from aapo.compare import stats
from aapo.compare.plots import level_order
from aapo.compare.runs import ATTEMPT_KEYS, Run, field_defaults
from aapo.compare.variants import CompareError
from aapo.messages import shown

TRAIN_WINDOW = 10
PAPER_LOSS_VARIANCE = "3.6e-4 AAPO, 3.9e-4 GPG, 3.53e-3 GRPO (1.5B run)"
RUN_KEYS = {"seed", "algorithm"} | ATTEMPT_KEYS
# the final held-out check, then the periodic one (the final one's when their sizes agree)
ACCURACY_KEYS = ("eval_final/accuracy", "eval/accuracy")
ACCURACY_LEVEL = re.compile(r"^eval(?:_final)?/accuracy/level_(.+)$")
TIES_LEVEL = re.compile(r"^ties/level_(.+)$")
ZERO_LOSS = 1e-6  # a run whose every logged loss is this close to 0 has a loss 0 by construction
Measure = Callable[[Run], float | None]


def _finite(value: Any) -> float | None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return float(value) if ok else None


def final_accuracy(run: Run) -> float | None:
    after = _finite(run.summary.get("held_out_accuracy_after"))
    return after if after is not None else _last_of(run, ACCURACY_KEYS)


def initial_accuracy(run: Run) -> float | None:
    before = _finite(run.summary.get("held_out_accuracy_before"))
    if before is not None:
        return before
    for key in ACCURACY_KEYS:
        steps, values = run.curve(key)
        if steps:
            return values[0] if steps[0] == 0 else None
    return None


def level_accuracy(level: str) -> Measure:
    """A run's final held-out accuracy on one difficulty level."""
    return lambda run: _last_of(run, [f"{key}/level_{level}" for key in ACCURACY_KEYS])


def _last_of(run: Run, keys: Sequence[str]) -> float | None:
    """The last value of the first of `keys` the run logged."""
    for key in keys:
        values = run.curve(key)[1]
        if values:
            return values[-1]
    return None


def levels_logged(groups: Mapping[str, Sequence[Run]], pattern: re.Pattern[str]) -> list[str]:
    """The levels L of the metric names matching `pattern` (group 1 = L) that some run logged."""
    found = {
        m.group(1)
        for runs in groups.values()
        for run in runs
        for key in run.metric_names()
        if (m := pattern.match(key))
    }
    return sorted(found, key=level_order)


def loss_variance(run: Run) -> float | None:
    return _finite(stats.sample_variance(run.curve("loss")[1]))


def mean_of(key: str) -> Measure:
    return lambda run: _finite(stats.mean(run.curve(key)[1]))


def gain(run: Run) -> float | None:
    before, after = initial_accuracy(run), final_accuracy(run)
    return None if before is None or after is None else after - before


def by_seed(runs: Sequence[Run], measure: Measure) -> dict[int, float]:
    """seed → the measure, for the runs that have it."""
    return {run.seed: v for run in runs if (v := measure(run)) is not None}


def summarise(runs: Sequence[Run], measure: Measure) -> stats.Interval:
    return stats.mean_ci(list(by_seed(runs, measure).values()))


def resolve_baseline(groups: Mapping[str, Sequence[Run]], baseline: str | None) -> str:
    """The named baseline, which must be among the variants; by default grpo when present,
    else the first variant."""
    if baseline is None:
        return "grpo" if "grpo" in groups else next(iter(groups))
    if baseline not in groups:
        raise CompareError(
            f"baseline {shown(baseline)} is not among the runs ({', '.join(groups)})"
        )
    return baseline


def fmt(interval: stats.Interval, spec: str = ".3f", signed: bool = False) -> str:
    """`0.592 [0.551, 0.633]`; one seed has no interval; none at all is a dash."""
    if interval.n == 0:
        return "–"
    sign = "+" if signed else ""
    text = f"{interval.mean:{sign}{spec}}"
    if interval.n == 1:
        return f"{text} (1 seed)"
    return f"{text} [{interval.low:{sign}{spec}}, {interval.high:{sign}{spec}}]"


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def render_report(
    groups: Mapping[str, Sequence[Run]],
    figures: Mapping[str, Path],
    report_path: Path,
    baseline: str | None = None,
    target: float | None = None,
) -> str:
    """The whole report as Markdown; figure links are relative to `report_path`."""
    if not groups:
        raise CompareError("no runs to report on")
    baseline = resolve_baseline(groups, baseline)
    sections = [
        _header(groups),
        _accuracy_section(groups),
        _paired_section(groups, baseline),
        _level_section(groups, baseline),
        _target_section(groups, baseline, target),
        _training_section(groups),
        _figures_section(figures, report_path),
    ]
    return "\n\n".join(s for s in sections if s) + "\n"


def write_report(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def _header(groups: Mapping[str, Sequence[Run]]) -> str:
    runs = [run for group in groups.values() for run in group]
    seeds = sorted({run.seed for run in runs})
    steps = sorted({max((r["step"] for r in run.records), default=0) for run in runs})
    lines = [
        f"# Comparison: {', '.join(groups)}",
        "",
        f"{len(runs)} runs; seeds {', '.join(map(str, seeds))}; "
        f"{'steps ' + ', '.join(map(str, steps))}.",
        "Intervals are 95% Student-t intervals over seeds (n − 1 degrees of freedom) unless "
        "marked bootstrap. Runs with the same seed see the same prompts in the same order and "
        "the same held-out problems, so differences between variants are paired by seed.",
        "Bootstrap intervals are 95% percentile intervals over resamples of the seeds with "
        f"replacement (exact up to {stats.EXACT_MAX_N} seeds, else {stats.RESAMPLES:,} seeded "
        "draws; docs/ALGORITHMS.md §10); at 2 or 3 seeds they run from the smallest to the "
        "largest value a resample gives, and understate the uncertainty.",
    ]
    lines += _config_notes(groups)
    return "\n".join(lines)


def _config_notes(groups: Mapping[str, Sequence[Run]]) -> list[str]:
    """Config keys that differ between variants (the comparison's subject, e.g. momentum_clip)
    and, flagged, keys that differ between seeds of one variant (which they should not)."""
    keys = sorted({k for runs in groups.values() for run in runs for k in run.config} - RUN_KEYS)
    defaults = field_defaults()  # for a run from before a field existed
    notes = []
    for key in keys:
        per_variant = {
            name: {repr(run.config.get(key, defaults.get(key))) for run in runs}
            for name, runs in groups.items()
        }
        mixed = [name for name, values in per_variant.items() if len(values) > 1]
        if mixed:
            notes.append(f"- **warning**: runs of {', '.join(mixed)} differ in `{key}`")
        elif len({next(iter(v)) for v in per_variant.values()}) > 1:
            shown = ", ".join(f"{name} {next(iter(v))}" for name, v in per_variant.items())
            notes.append(f"- `{key}`: {shown}")
    return ["", "Config keys that differ between variants:", *notes] if notes else []


def _accuracy_section(groups: Mapping[str, Sequence[Run]]) -> str:
    title = "## Held-out accuracy (greedy)"
    if not any(final_accuracy(run) is not None for runs in groups.values() for run in runs):
        return f"{title}\n\nNo held-out accuracy in these runs (set `eval_num_problems`)."
    levels = levels_logged(groups, ACCURACY_LEVEL)
    header = ["variant", "seeds", "before", "after", "after, IQM (bootstrap)", "gain (paired)"]
    header += [f"level {level}" for level in levels]
    rows = []
    for name, runs in groups.items():
        row = [
            name,
            str(len(runs)),
            fmt(summarise(runs, initial_accuracy)),
            fmt(summarise(runs, final_accuracy)),
            fmt(stats.iqm(list(by_seed(runs, final_accuracy).values()))),
            fmt(summarise(runs, gain), signed=True),
        ]
        rows.append(row + [fmt(summarise(runs, level_accuracy(level))) for level in levels])
    note = (
        "Before / after: each run's `held_out_accuracy_before` / `_after` (summary.json), else "
        "its first (step 0) / last `eval_final/accuracy` (the final check, when its size "
        "differs from the periodic one's), else `eval/accuracy`; gain: after - before, paired "
        "within a run. IQM: the interquartile mean of the runs' final accuracy (the mean after "
        "cutting floor(n/4) runs from each end, so the plain mean below 4 seeds)."
    )
    if levels:
        note += (
            " Levels: the last logged `eval_final/accuracy/level_<L>` of each run, else its "
            "last `eval/accuracy/level_<L>`."
        )
    problems = sorted({run.summary.get("held_out_problems") for g in groups.values() for run in g}
                      - {None})  # fmt: skip
    if problems:
        note += f" Problems in the final check: {', '.join(map(str, problems))}."
    return "\n\n".join((title, table(header, rows), note))


def _paired_section(groups: Mapping[str, Sequence[Run]], baseline: str) -> str:
    title = f"## Paired difference to {baseline} (final held-out accuracy)"
    base = by_seed(groups[baseline], final_accuracy)
    if not base:
        return f"{title}\n\n{baseline} has no held-out accuracy: no paired difference."
    rows = []
    for name, runs in groups.items():
        if name == baseline:
            continue
        values = by_seed(runs, final_accuracy)
        diff = stats.paired_difference(values, base)
        better = sum(values[s] > base[s] for s in set(values) & set(base))
        rows.append(
            [
                name,
                str(diff.n),
                fmt(diff, signed=True),
                fmt(stats.paired_bootstrap(values, base), signed=True),
                f"{better}/{diff.n}",
                fmt(stats.probability_of_improvement(values, base)),
                _reading(diff, baseline),
            ]
        )
    if not rows:
        return ""
    header = [
        "variant",
        "seeds paired",
        f"minus {baseline}",
        f"minus {baseline} (bootstrap)",
        "seeds better",
        f"P(variant > {baseline}) (bootstrap)",
        "reading",
    ]
    note = (
        f"Minus {baseline}: the mean over seeds of the per-seed difference, with its Student-t "
        "interval (the reading follows it) and with a percentile bootstrap interval. P(variant > "
        f"{baseline}): the probability of improvement, the fraction of all (variant seed, "
        f"{baseline} seed) pairs of runs in which the variant's accuracy is higher, ties "
        "counting 1/2; seeds better counts the paired seeds only."
    )
    return f"{title}\n\n{table(header, rows)}\n\n{note}"


def _level_section(groups: Mapping[str, Sequence[Run]], baseline: str) -> str:
    """Per difficulty level: the paired difference of final accuracy to the baseline, and the
    fraction of tied groups over training, so an edge can be set beside where ties are."""
    accuracy_levels = levels_logged(groups, ACCURACY_LEVEL)
    tie_levels = levels_logged(groups, TIES_LEVEL)
    parts = []
    others = [name for name in groups if name != baseline]
    if accuracy_levels and others:
        rows = [
            [name]
            + [
                fmt(
                    stats.paired_difference(
                        by_seed(groups[name], level_accuracy(level)),
                        by_seed(groups[baseline], level_accuracy(level)),
                    ),
                    signed=True,
                )
                for level in accuracy_levels
            ]
            for name in others
        ]
        header = ["variant", *(f"level {level}" for level in accuracy_levels)]
        parts += [
            f"Final held-out accuracy minus {baseline}, per level, paired by seed (Student-t).",
            table(header, rows),
        ]
    if tie_levels:
        rows = [
            [name, fmt(summarise(runs, mean_of("frac_reward_zero_std")))]
            + [fmt(summarise(runs, mean_of(f"ties/level_{level}"))) for level in tie_levels]
            for name, runs in groups.items()
        ]
        header = ["variant", "all levels", *(f"level {level}" for level in tie_levels)]
        parts += [
            "Tie fraction over training: per run, the mean over steps of `ties/level_<L>` (the "
            "share of the step's level-L groups whose rewards all tie; steps that drew no "
            "level-L prompt are left out), then the mean over seeds.",
            table(header, rows),
            _tie_order(groups[baseline], tie_levels, baseline),
        ]
    return "\n\n".join(["## By difficulty level", *parts]) if parts else ""


def _tie_order(runs: Sequence[Run], levels: Sequence[str], baseline: str) -> str:
    means = {level: summarise(runs, mean_of(f"ties/level_{level}")).mean for level in levels}
    ranked = sorted((lv for lv in levels if not math.isnan(means[lv])), key=lambda lv: -means[lv])
    if not ranked:
        return ""
    shown = ", ".join(f"{level} ({means[level]:.2f})" for level in ranked)
    return f"Levels by {baseline}'s tie fraction, most tied first: {shown}."


def _reading(diff: stats.Interval, baseline: str) -> str:
    if diff.n < 2:
        return "too few paired seeds for an interval"
    if diff.low > 0:
        return f"higher than {baseline}"
    if diff.high < 0:
        return f"lower than {baseline}"
    return f"no clear difference at {diff.n} seeds (the interval contains 0)"


def _target_section(
    groups: Mapping[str, Sequence[Run]], baseline: str, target: float | None
) -> str:
    held_out = any(len(run.curve("eval/accuracy")[0]) > 1 for g in groups.values() for run in g)
    if target is None:
        target = summarise(groups[baseline], final_accuracy).mean
        if math.isnan(target):
            return ""
        origin = f"{baseline}'s mean final held-out accuracy"
    else:
        origin = "--target"
    metric = (
        "held-out accuracy"
        if held_out
        else (
            f"training accuracy (trailing mean over {TRAIN_WINDOW} steps; no held-out curve logged)"
        )
    )
    rows = []
    for name, runs in groups.items():
        reached = by_seed(runs, lambda run: _steps_to(run, target, held_out))
        steps = fmt(stats.mean_ci(list(reached.values())), ".1f")
        rows.append([name, f"{len(reached)}/{len(runs)}", steps])
    header = ["variant", "seeds that reach it", "steps (mean over those seeds)"]
    title = f"## Steps to reach {target:.3f} ({origin})"
    return f"{title}\n\nMeasured on {metric}.\n\n{table(header, rows)}"


def _steps_to(run: Run, target: float, held_out: bool) -> float | None:
    if held_out:
        steps, values = run.curve("eval/accuracy")
    else:
        steps, raw = run.curve("rewards/accuracy/mean")
        values = stats.trailing_mean(raw, TRAIN_WINDOW)
    step = stats.steps_to_target(steps, values, target)
    return None if step is None else float(step)


def _training_section(groups: Mapping[str, Sequence[Run]]) -> str:
    header = [
        "variant",
        "loss variance",
        "tie fraction",
        "zero-advantage fraction",
        "momentum mass share",
        "of it, in tied groups",
        "seconds",
    ]
    rows = [
        [
            name,
            fmt(summarise(runs, loss_variance), ".2e"),
            fmt(summarise(runs, mean_of("frac_reward_zero_std"))),
            fmt(summarise(runs, mean_of("advantage/zero_frac"))),
            fmt(summarise(runs, mean_of("momentum/mass_share"))),
            fmt(summarise(runs, mean_of("momentum/tied_mass_share"))),
            _plain_mean(summarise(runs, lambda run: _finite(run.summary.get("seconds")))),
        ]
        for name, runs in groups.items()
    ]
    notes = (
        "Loss variance: the sample variance of the per-step `loss` over a run (the paper: "
        f"{PAPER_LOSS_VARIANCE}). Tie fraction: the mean over steps of `frac_reward_zero_std`, "
        "the share of groups whose rewards all tie. Momentum mass share (AAPO variants): the "
        "mean over steps of `momentum/mass_share`, the share of the advantage mass (sum of "
        "|group term| + |momentum|) that the momentum carries, and of `momentum/tied_mass_share`,"
        " the part of the momentum's mass that lies in tied groups, where the group-relative "
        "methods give nothing (docs/ALGORITHMS.md §3.7). Seconds: wall time of one run "
        "(summary.json)."
    )
    return f"## Training statistics\n\n{table(header, rows)}\n\n{notes}\n\n{_loss_note(groups)}"


def _loss_note(groups: Mapping[str, Sequence[Run]]) -> str:
    """Where the loss-variance statistic says nothing about stability."""
    zero = [
        name
        for name, runs in groups.items()
        if any(run.has("loss") for run in runs)
        and all(abs(v) <= ZERO_LOSS for run in runs for v in run.curve("loss")[1])
    ]
    note = (
        "Where loss variance says nothing: the loss *value* is a different quantity per loss, "
        "so its variance compares only variants with the same loss. AAPO and GPG log the "
        "weighted NLL, −Σ A log π / tokens. GRPO's clipped surrogate with one update per batch "
        "(μ = `num_iterations` 1, `steps_per_generation` = `gradient_accumulation_steps`, β 0) "
        "has ratio 1, so its sequence-mean loss is −(1/S) Σᵢ Aᵢ, which is 0 at every step "
        "because GRPO's advantages sum to 0 in each group: its loss variance is float noise. "
        "DAPO's and Dr. GRPO's token-weighted aggregation gives −Σᵢ Aᵢ |oᵢ| / normaliser "
        "instead, a covariance of advantage and length."
    )
    if zero:
        note += (
            f" Here every logged loss of {', '.join(zero)} is within {ZERO_LOSS:g} of 0: "
            "read no stability into its loss variance."
        )
    return note


def _plain_mean(interval: stats.Interval) -> str:
    return f"{interval.mean:.0f}" if interval.n else "–"


def _figures_section(figures: Mapping[str, Path], report_path: Path) -> str:
    if not figures:
        return ""
    lines = ["## Figures", ""]
    for name, path in figures.items():
        link = Path(os.path.relpath(path, report_path.parent)).as_posix()
        lines.append(f"![{name}]({link})")
    return "\n".join(lines)
