"""Run directories as data: metrics curves, config, seed and variant of each `aapo train` run.

A run directory holds `metrics.jsonl` (one JSON object per logged step, `step` plus metric
names; evaluation lines may share a step with a training line), `config.yaml`, and, when
`aapo compare` ran it, `summary.json` (the train command's final JSON line plus the variant).
`find_runs` accepts run directories and compare output directories alike.

Left out: statistics (stats.py), figures (plots.py), the report (report.py).
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from aapo.compare.variants import CompareError, infer_variant

METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"
# how one attempt at a run was started, not what it trained: never a difference between runs
ATTEMPT_KEYS = frozenset({"resume_from_checkpoint", "output_dir", "overwrite_output_dir"})


@functools.cache
def field_defaults() -> dict[str, Any]:
    """Every `aapo train` field at its default, as a run's config.yaml writes it: what a run
    trained with for a field that aapo gained after it (a new field defaults to the old
    behaviour)."""
    from aapo.config import config_to_dict
    from aapo.training.config import TrainConfig

    return yaml.safe_load(yaml.safe_dump(config_to_dict(TrainConfig()), sort_keys=False))


@dataclass(frozen=True)
class Run:
    """One finished or partial training run."""

    path: Path
    variant: str
    seed: int
    config: dict[str, Any]
    records: list[dict[str, Any]]  # metrics.jsonl lines, in file order
    summary: dict[str, Any]  # summary.json, {} when absent

    def curve(self, key: str) -> tuple[list[int], list[float]]:
        """(steps, values) of metric `key`, sorted by step; a step logged twice keeps its last
        value; null (no data that step) and non-finite values are left out."""
        by_step: dict[int, float] = {}
        for record in self.records:
            value = record.get(key)
            if isinstance(value, (int, float)) and math.isfinite(value):
                by_step[int(record["step"])] = float(value)
        steps = sorted(by_step)
        return steps, [by_step[s] for s in steps]

    def has(self, key: str) -> bool:
        return bool(self.curve(key)[0])

    def metric_names(self) -> set[str]:
        return {key for record in self.records for key in record}


def read_records(path: Path) -> list[dict[str, Any]]:
    """metrics.jsonl lines; a line that is not a JSON object with a `step` is named."""
    records = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise CompareError(f"{path}:{number}: not valid JSON ({err.msg})") from err
        if not isinstance(record, dict) or not isinstance(record.get("step"), int):
            raise CompareError(f"{path}:{number}: expected a JSON object with an integer 'step'")
        records.append(record)
    return records


def load_run(path: Path) -> Run:
    path = Path(path)
    metrics = path / METRICS_FILE
    if not metrics.is_file():
        raise CompareError(f"run directory {path} has no {METRICS_FILE}")
    config_path = path / "config.yaml"
    if not config_path.is_file():
        raise CompareError(f"run directory {path} has no config.yaml")
    config = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    if not isinstance(config, dict) or not isinstance(config.get("seed"), int):
        raise CompareError(f"{config_path}: expected a mapping with an integer 'seed'")
    summary_path = path / SUMMARY_FILE
    summary = json.loads(summary_path.read_text(encoding="utf-8")) if summary_path.is_file() else {}
    variant = summary.get("variant") or infer_variant(config)
    return Run(path, variant, config["seed"], config, read_records(metrics), summary)


def find_runs(paths: Sequence[str | Path]) -> list[Run]:
    """The runs in `paths`, each a run directory or a directory of runs (searched below it)."""
    found: dict[Path, None] = {}
    for raw in paths:
        path = Path(raw)
        if not path.is_dir():
            raise CompareError(f"{path} is not a directory")
        if (path / METRICS_FILE).is_file():
            found[path.resolve()] = None
            continue
        below = sorted(
            p.parent.resolve()
            for p in path.rglob(METRICS_FILE)
            if not any(part.startswith("checkpoint-") for part in p.relative_to(path).parts)
        )
        if not below:
            raise CompareError(
                f"{path} has no {METRICS_FILE}: neither a run directory nor a directory of runs"
            )
        found.update(dict.fromkeys(below))
    runs = [load_run(p) for p in found]
    _check_unique(runs)
    return runs


def _check_unique(runs: Iterable[Run]) -> None:
    """Two runs of one variant and seed would make the pairing by seed ambiguous."""
    seen: dict[tuple[str, int], Path] = {}
    for run in runs:
        key = (run.variant, run.seed)
        if key in seen:
            raise CompareError(
                f"runs {seen[key]} and {run.path} are both {run.variant} seed {run.seed}: "
                "plot them separately"
            )
        seen[key] = run.path


def group_runs(runs: Iterable[Run]) -> dict[str, list[Run]]:
    """Variant → its runs sorted by seed; variants in order of first appearance."""
    groups: dict[str, list[Run]] = {}
    for run in runs:
        groups.setdefault(run.variant, []).append(run)
    return {name: sorted(group, key=lambda r: r.seed) for name, group in groups.items()}
