"""`aapo eval` end to end on the bundled model, with tiny slices and few tokens (CPU, offline).

Covers the Table-1 output, results.json/.csv, the audit file, resume after an interruption,
refusal of a resumed run with other settings, the synthetic task's per-level table and the
comparison of two evaluations. Tests that read the paper's benchmark files skip when
../shared/data is absent; all skip when the bundled model is not built.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"  # nothing may come from a hub

from aapo.assets import TINY_MODEL_DIR
from aapo.cli import main
from aapo.evaluation import harness

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT.parent / "shared" / "data" / "benchmarks"
needs_model = pytest.mark.skipif(
    not (TINY_MODEL_DIR / "config.json").exists(), reason="the bundled model is not built"
)
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason=f"benchmark data not found at {DATA}")
pytestmark = [needs_model, pytest.mark.slow]
QUICK = ["--max_new_tokens", "24", "--progress", "false"]


def _eval(capsys: pytest.CaptureFixture, out: Path, *args: str) -> tuple[dict, str]:
    main(["eval", "--output_dir", str(out), *QUICK, *args])
    stdout = capsys.readouterr().out
    return json.loads((out / "results.json").read_text()), stdout


def _samples(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]


@needs_data
def test_table_files_and_audit_trail_on_benchmark_slices(capsys, tmp_path: Path) -> None:
    out = tmp_path / "base"
    args = ["--benchmarks", "aime24,math500", "--data_dir", str(DATA), "--limit", "2"]
    results, stdout = _eval(capsys, out, *args, "--num_samples", "2", "--batch_size", "4")

    assert "| Model | AIME24 | MATH-500 | Avg |" in stdout
    assert "| tiny-math-lm (bundled) | " in stdout and "k=2" in stdout
    assert set(results["benchmarks"]) == {"aime24", "math500"}
    aime = results["benchmarks"]["aime24"]
    assert (aime["num_problems"], aime["num_samples"]) == (2, 2)
    assert aime["ci95"][0] <= aime["pass@1"] <= aime["ci95"][1]
    assert results["average"]["pass@1"] == pytest.approx(
        (aime["pass@1"] + results["benchmarks"]["math500"]["pass@1"]) / 2
    )
    assert results["samples"] == {"generated": 8, "reused": 0}

    with (out / "results.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert ("aime24", "") in {(r["benchmark"], r["level"]) for r in rows}
    assert rows[-1]["benchmark"] == "avg"

    samples = _samples(out)
    assert len(samples) == 8  # 2 benchmarks × 2 problems × k = 2
    first = samples[0]
    assert {"prompt", "completion", "extracted", "gold", "correct", "status"} <= set(first)
    assert "Therefore, the final answer is" in first["prompt"]  # the paper's eval prompt
    assert first["gold"] == "204" and first["id"] == "aime24-2024-I-1"
    # the score can be recomputed from the audit file alone
    audited = sum(s["correct"] for s in samples if s["benchmark"] == "aime24") / 4
    assert aime["pass@1"] == pytest.approx(audited)

    # a finished evaluation is only re-reported; other sampling settings (batch_size among
    # them: it fixes which draws a seed gives) are refused
    again, _ = _eval(capsys, out, *args, "--num_samples", "2", "--batch_size", "4")
    assert again["samples"] == {"generated": 0, "reused": 8}
    assert again["benchmarks"] == results["benchmarks"]
    with pytest.raises(SystemExit) as stop:
        main(
            ["eval", "--output_dir", str(out), *QUICK, *args, "--batch_size", "4",
             "--num_samples", "2", "--temperature", "1.0"]
        )  # fmt: skip
    assert stop.value.code == 2
    assert "temperature: 0.6 then, 1.0 now" in capsys.readouterr().err


class Interrupting:
    """Wraps the real sampler and stops the run (as Ctrl-C would) on the given call."""

    def __init__(self, inner, stop_on_call: int) -> None:
        self.inner, self.stop_on_call, self.calls = inner, stop_on_call, 0

    def generate(self, prompts, params):
        self.calls += 1
        if self.calls == self.stop_on_call:
            raise KeyboardInterrupt
        return self.inner.generate(prompts, params)


def test_resume_after_interruption_matches_a_straight_run(
    capsys, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    args = ["--benchmarks", "synthetic", "--limit", "4", "--num_samples", "2", "--batch_size", "2"]
    straight, _ = _eval(capsys, tmp_path / "straight", *args)

    real = harness.make_sampler
    monkeypatch.setattr(harness, "make_sampler", lambda *a: Interrupting(real(*a), 3))
    with pytest.raises(SystemExit) as stopped:  # Ctrl-C: one line, exit status 130
        _eval(capsys, tmp_path / "resumed", *args)
    assert stopped.value.code == 130
    assert capsys.readouterr().err.strip().endswith("aapo eval: interrupted")
    assert len(_samples(tmp_path / "resumed")) == 4  # two batches of 2 were flushed
    monkeypatch.setattr(harness, "make_sampler", real)

    resumed, _ = _eval(capsys, tmp_path / "resumed", *args)
    assert resumed["samples"] == {"generated": 4, "reused": 4}

    def by_key(out: Path) -> dict:
        return {(s["id"], s["sample"]): s["completion"] for s in _samples(out)}

    assert by_key(tmp_path / "resumed") == by_key(tmp_path / "straight")
    assert resumed["benchmarks"] == straight["benchmarks"]


def test_synthetic_levels_and_a_two_model_table(capsys, tmp_path: Path) -> None:
    args = ["--benchmarks", "synthetic", "--limit", "5", "--temperature", "0"]
    before, stdout = _eval(capsys, tmp_path / "before", *args)
    assert "Synthetic by level:" in stdout and "| Model | L1 | L2 | L3 | L4 | L5 | All |" in stdout
    assert set(before["benchmarks"]["synthetic"]["levels"]) == {"1", "2", "3", "4", "5"}
    first = _samples(tmp_path / "before")[0]
    assert "Therefore" not in first["prompt"]  # the task's own plain prompt

    after, stdout = _eval(
        capsys, tmp_path / "after", *args, "--model_name", "after",
        "--compare", str(tmp_path / "before"),
    )  # fmt: skip
    table = stdout.split("\n\n")[0].splitlines()
    assert table[0] == "| Model | Synthetic |"
    assert table[2].startswith("| tiny-math-lm (bundled) |") and table[3].startswith("| after |")
    # greedy decoding of the same model: the same numbers in both rows
    assert after["benchmarks"]["synthetic"]["pass@1"] == before["benchmarks"]["synthetic"]["pass@1"]


def test_the_installed_command_line(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    command = [sys.executable, "-m", "aapo", "eval", "--limit", "2", *QUICK]
    done = subprocess.run(
        [*command, "--output_dir", str(tmp_path)],
        capture_output=True, text=True, env=env, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "| Model | Synthetic |" in done.stdout  # no --model, no --benchmarks: the bundled task
    assert (tmp_path / "results.json").exists()
