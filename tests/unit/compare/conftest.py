"""Synthetic run directories, written the way `aapo train` (and `aapo compare`) write them."""

import json
from pathlib import Path

import pytest
import yaml


def write_run(
    path: Path,
    algorithm: str,
    seed: int,
    records: list[dict],
    summary: dict | None = None,
    **config,
) -> Path:
    """A run directory: config.yaml, metrics.jsonl (one line per record), optional summary.json."""
    path.mkdir(parents=True, exist_ok=True)
    values = {"algorithm": algorithm, "seed": seed, "momentum_clip": True, **config}
    (path / "config.yaml").write_text(yaml.safe_dump(values), encoding="utf-8")
    lines = "".join(json.dumps(r) + "\n" for r in records)
    (path / "metrics.jsonl").write_text(lines, encoding="utf-8")
    if summary is not None:
        (path / "summary.json").write_text(json.dumps(summary), encoding="utf-8")
    return path


def training_records(steps: int, offset: float, aapo: bool) -> list[dict]:
    """Per-step training metrics that rise with the step; AAPO runs add momentum/ref metrics."""
    records = []
    for step in range(1, steps + 1):
        record = {
            "step": step,
            "reward": offset + 0.1 * step,
            "rewards/format/mean": 0.5,
            "rewards/accuracy/mean": offset + 0.05 * step,
            "completions/mean_length": 20.0 + step,
            "loss": 0.01 * (step % 2),
            "advantage/zero_frac": 0.5,
            "frac_reward_zero_std": 0.25 * (step % 2),
        }
        if aapo:
            record.update(
                {
                    "momentum/mean": 0.1,
                    "momentum/clip_low_frac": 0.0,
                    "momentum/clip_high_frac": 0.2,
                    "momentum/mass_share": 0.25,
                    "momentum/tied_mass_share": 0.5,
                    "ref_reward": offset,
                }
            )
        records.append(record)
    return records


@pytest.fixture
def make_run():
    return write_run


@pytest.fixture
def records():
    return training_records
