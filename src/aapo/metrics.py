"""Where metrics go: `metrics.jsonl` always, TensorBoard and W&B when asked for.

Names follow TRL where TRL has one (`reward`, `rewards/<name>/mean`, `frac_reward_zero_std`,
`completions/mean_length`, `kl`, `clip_ratio/...`, `grad_norm`, `learning_rate`, `loss`);
AAPO's own are `ref_reward`, `momentum/*` (docs/ALGORITHMS.md §3.5, §3.7),
`advantage/zero_frac` and `ties/level_<L>` (ties by the rows' `level`), and `time/*` splits a
step into policy generation, reference generation, rewards and the update (`timed`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

from aapo.messages import shown

log = logging.getLogger(__name__)


@contextlib.contextmanager
def timed(times: dict[str, float], key: str) -> Iterator[None]:
    """Add the block's wall time to `times[key]` (a `time/*` metric)."""
    start = time.perf_counter()
    yield
    times[key] = times.get(key, 0.0) + time.perf_counter() - start


class MetricSink(Protocol):
    def write(self, step: int, metrics: dict[str, float]) -> None: ...
    def close(self) -> None: ...


class JsonlSink:
    """One JSON object per logged step. On resume, lines after the resumed step are dropped,
    so a resumed run's file reads like an uninterrupted one; so is a last line cut short by
    a kill (with a warning)."""

    def __init__(self, path: Path, resume_step: int | None = None) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        if resume_step is not None and path.exists():
            kept = [
                json.dumps(record)
                for record in read_metrics(path)
                if record.get("step", 0) <= resume_step
            ]
            path.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
        elif resume_step is None:
            path.write_text("", encoding="utf-8")
        self._handle = path.open("a", encoding="utf-8")

    def write(self, step: int, metrics: dict[str, float]) -> None:
        record = {"step": step, **{k: _plain(v) for k, v in metrics.items()}}
        self._handle.write(json.dumps(record) + "\n")
        self._handle.flush()

    def close(self) -> None:
        self._handle.close()


class TensorBoardSink:
    def __init__(self, log_dir: Path) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self._writer = SummaryWriter(log_dir=str(log_dir))

    def write(self, step: int, metrics: dict[str, float]) -> None:
        for key, value in metrics.items():
            if value is not None and math.isfinite(value):
                self._writer.add_scalar(key, value, step)
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()


class WandbSink:
    def __init__(self, config: dict[str, Any], run_dir: Path) -> None:
        try:
            import wandb
        except ImportError as err:
            raise ImportError(
                "report_to includes wandb but wandb is not installed: pip install aapo[wandb]"
            ) from err
        self._run = wandb.init(config=config, dir=str(run_dir))

    def write(self, step: int, metrics: dict[str, float]) -> None:
        self._run.log(metrics, step=step)

    def close(self) -> None:
        self._run.finish()


def _plain(value: Any) -> Any:
    """JSON has no NaN: a metric with no data (e.g. no valid reward) is written as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class MetricsFileError(ValueError):
    """A metrics file that cannot be continued; the message names the file, line and field."""


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The records of a metrics file. An unreadable last line is what a kill mid-write leaves:
    it is dropped with a warning. An unreadable line before it is an error naming it, and so
    is a `step` that is not an int >= 0 or below the line before's (two runs' lines)."""
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    numbered = [(n, line) for n, line in enumerate(lines, start=1) if line.strip()]
    records = []
    for i, (lineno, line) in enumerate(numbered):
        try:
            record = json.loads(line)
            if not isinstance(record, dict):
                raise ValueError("not a JSON object")
        except ValueError as err:
            if i == len(numbered) - 1:
                log.warning("%s:%d: dropping an incomplete last line (interrupted write)",
                            path, lineno)  # fmt: skip
                break
            raise MetricsFileError(f"{path}:{lineno}: not a metrics record ({err})") from err
        step = record.get("step")
        if type(step) is not int or step < 0:
            raise MetricsFileError(
                f"{path}:{lineno}: field 'step' must be an integer >= 0, got {shown(step)}"
            )
        if records and step < records[-1]["step"]:  # completions.jsonl: many lines a step
            raise MetricsFileError(
                f"{path}:{lineno}: step {step} after step {records[-1]['step']}: the file "
                "holds lines of more than one run"
            )
        records.append(record)
    return records
