"""The paper's training analyses as PNG figures: mean and 95% band over seeds per variant.

One figure per analysis (reward, format reward, training accuracy, response length, held-out
accuracy and its levels, loss, zero-advantage fraction, AAPO's momentum mean and clip fractions,
policy vs reference reward) plus `overview.png` with every panel. A panel whose metric no run
logged is skipped. Variants differ in line style and marker as well as colour, so the figures
read in greyscale. Drawn on matplotlib's Agg canvas without pyplot, so no global state changes.

Left out: the numbers (stats.py, report.py).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from aapo.compare.runs import Run
from aapo.compare.stats import band, trailing_mean

LINESTYLES = ["-", "--", "-.", ":"]
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*"]
KEY_LINESTYLES = ["-", ":", "--", "-."]  # the metrics of a multi-metric panel
COLOURS = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000"]
LEVEL_KEY = re.compile(r"^eval/accuracy/level_(.+)$")


@dataclass(frozen=True)
class Panel:
    """One analysis: the metric(s) drawn, how each is labelled, whether to smooth it."""

    name: str  # file stem
    title: str
    keys: tuple[str, ...]
    labels: tuple[str, ...] = ()  # one per key when several keys share the panel
    smooth: bool = True  # per-step training metrics; sparse eval curves are drawn as logged


PANELS = (
    Panel("reward", "Reward (policy samples)", ("reward",)),
    Panel("format_reward", "Format reward", ("rewards/format/mean",)),
    Panel("accuracy", "Training accuracy", ("rewards/accuracy/mean",)),
    Panel("length", "Response length (tokens)", ("completions/mean_length",)),
    Panel("eval_accuracy", "Held-out accuracy (greedy)", ("eval/accuracy",), smooth=False),
    Panel("loss", "Training loss", ("loss",)),
    Panel("zero_advantage", "Fraction of zero advantages", ("advantage/zero_frac",)),
    Panel("momentum_mean", "AAPO momentum mean", ("momentum/mean",)),
    Panel(
        "momentum_mass",
        "Momentum's share of the advantage mass",
        ("momentum/mass_share", "momentum/tied_mass_share"),
        ("of all mass", "of it, in tied groups"),
    ),
    Panel(
        "momentum_clip",
        "Momentum clipped at its bounds",
        ("momentum/clip_low_frac", "momentum/clip_high_frac"),
        ("low", "high"),
    ),
    Panel(
        "reference_reward",
        "Policy vs reference reward",
        ("reward", "ref_reward"),
        ("policy", "reference"),
    ),
)


def write_figures(
    groups: Mapping[str, Sequence[Run]], out_dir: Path, smooth: int = 1
) -> dict[str, Path]:
    """Draw every panel some run has data for into `out_dir`; name → PNG path, in PANELS order,
    then `eval_accuracy_levels` and `overview`. `smooth` > 1 applies a trailing mean over that
    many steps to the per-step training metrics before averaging over seeds."""
    out_dir.mkdir(parents=True, exist_ok=True)
    drawable = [p for p in PANELS if _series(groups, p)]
    paths: dict[str, Path] = {}
    for panel in drawable:
        fig = Figure(figsize=(6.4, 4.2), layout="constrained")
        _draw(fig.add_subplot(), groups, panel, smooth)
        paths[panel.name] = _save(fig, out_dir / f"{panel.name}.png")
    levels = level_panels(groups)
    if levels:
        fig = _grid(groups, levels, smooth, width=4.2)
        paths["eval_accuracy_levels"] = _save(fig, out_dir / "eval_accuracy_levels.png")
    if drawable:
        paths["overview"] = _save(_grid(groups, drawable, smooth), out_dir / "overview.png")
    return paths


def level_panels(groups: Mapping[str, Sequence[Run]]) -> list[Panel]:
    """One held-out accuracy panel per difficulty level some run logged."""
    found = {
        m.group(1)
        for runs in groups.values()
        for run in runs
        for key in run.metric_names()
        if (m := LEVEL_KEY.match(key))
    }
    return [
        Panel(
            f"eval_accuracy_level_{level}",
            f"Held-out accuracy, level {level}",
            (f"eval/accuracy/level_{level}",),
            smooth=False,
        )
        for level in sorted(found, key=level_order)
    ]


def level_order(level: str) -> tuple[int, Any]:
    """Numeric levels first, in numeric order, then the rest by name."""
    return (0, int(level)) if level.isdigit() else (1, level)


def _grid(
    groups: Mapping[str, Sequence[Run]], panels: Sequence[Panel], smooth: int, width: float = 5.0
) -> Figure:
    cols = min(3, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig = Figure(figsize=(width * cols, 0.7 * width * rows), layout="constrained")
    for index, panel in enumerate(panels):
        _draw(fig.add_subplot(rows, cols, index + 1), groups, panel, smooth)
    return fig


def _series(groups: Mapping[str, Sequence[Run]], panel: Panel) -> list[tuple[int, str, int]]:
    """(variant index, variant, key index) for each variant whose runs all logged the key;
    a multi-metric panel needs every one of its keys (the reference panel: AAPO runs only)."""
    out = []
    for g, (name, runs) in enumerate(groups.items()):
        if not all(run.has(key) for run in runs for key in panel.keys):
            continue
        out.extend((g, name, k) for k in range(len(panel.keys)))
    return out


def _draw(ax: Any, groups: Mapping[str, Sequence[Run]], panel: Panel, smooth: int) -> None:
    for g, name, k in _series(groups, panel):
        runs = groups[name]
        key = panel.keys[k]
        curves = [run.curve(key) for run in runs]
        if panel.smooth and smooth > 1:
            curves = [(steps, trailing_mean(values, smooth)) for steps, values in curves]
        steps, intervals = band(curves)
        if not steps:
            continue
        colour = COLOURS[g % len(COLOURS)]
        # one metric: variants differ in line style and marker; several: the marker tells the
        # variant, the line style the metric
        linestyle = LINESTYLES[g % len(LINESTYLES)] if len(panel.keys) == 1 else KEY_LINESTYLES[k]
        label = f"{name} (n={len(runs)})"
        if panel.labels:
            label = f"{name} {panel.labels[k]} (n={len(runs)})"
        ax.plot(
            steps,
            [i.mean for i in intervals],
            color=colour,
            linestyle=linestyle,
            marker=MARKERS[g % len(MARKERS)],
            markevery=max(1, len(steps) // 10),
            markersize=5,
            label=label,
        )
        ax.fill_between(
            steps,
            [i.low for i in intervals],
            [i.high for i in intervals],
            color=colour,
            alpha=0.18,
            linewidth=0,
        )
    ax.set_title(panel.title)
    ax.set_xlabel("step")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(True, alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize="small")


def _save(fig: Figure, path: Path) -> Path:
    fig.savefig(path, dpi=110)
    return path
