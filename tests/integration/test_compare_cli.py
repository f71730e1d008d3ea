"""`aapo compare` for real on the bundled model with a tiny budget (2 variants × 2 seeds × 2
steps), then `aapo plot` on its output, and a rerun that keeps finished runs and resumes a
killed one from its checkpoint."""

import json
import os
import subprocess
import sys

import pytest

from aapo.cli import main

pytestmark = pytest.mark.slow
TINY = [
    "--max_steps",
    "2",
    "--num_generations",
    "2",
    "--per_device_train_batch_size",
    "4",
    "--gradient_accumulation_steps",
    "1",
    "--max_completion_length",
    "8",
    "--dataset_size",
    "16",
    "--eval_num_problems",
    "4",
    "--save_steps",
    "1",
    "--report_to",
    "[]",
]
PNG = b"\x89PNG\r\n\x1a\n"


def _compare(out):
    command = [
        sys.executable,
        "-m",
        "aapo",
        "compare",
        "--algorithms",
        "aapo,grpo",
        "--seeds",
        "2",
        "--output_dir",
        str(out),
        *TINY,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def test_compare_writes_runs_figures_report_and_keeps_finished_runs(tmp_path, capsys):
    out = tmp_path / "cmp"
    _compare(out)
    runs = {(v, s): out / v / f"seed-{s}" for v in ("aapo", "grpo") for s in (1, 2)}
    for (variant, seed), run in runs.items():
        summary = json.loads((run / "summary.json").read_text())
        assert (summary["variant"], summary["seed"], summary["steps"]) == (variant, seed, 2)
        assert 0 <= summary["held_out_accuracy_after"] <= 1
        assert [json.loads(line)["step"] for line in (run / "metrics.jsonl").open()][-1] == 2
        assert (run / "model.safetensors").is_file() and (run / "checkpoint-1").is_dir()
    for name in ("reward", "loss", "momentum_mean", "reference_reward", "overview"):
        data = (out / "figures" / f"{name}.png").read_bytes()
        assert data.startswith(PNG) and len(data) > 5000
    report = (out / "report.md").read_text()
    assert report.startswith("# Comparison: aapo, grpo")
    assert "| aapo | 2 |" in report and "| grpo | 2 |" in report
    assert "## Paired difference to grpo" in report
    for statistic in ("after, IQM (bootstrap)", "minus grpo (bootstrap)", "P(variant > grpo)"):
        assert f"| {statistic}" in report, statistic
    assert "![reward](figures/reward.png)" in report

    # aapo seed 2 "killed" after checkpoint-1: no summary; the other three are finished
    (runs["aapo", 2] / "summary.json").unlink()
    stamps = {key: (run / "model.safetensors").stat().st_mtime_ns for key, run in runs.items()}
    again = _compare(out)
    assert again.stderr.count("kept (finished earlier)") == 3
    for key, run in runs.items():
        changed = (run / "model.safetensors").stat().st_mtime_ns != stamps[key]
        assert changed == (key == ("aapo", 2)), key
    assert "resumed from" in (runs["aapo", 2] / "train.log").read_text()
    assert json.loads((runs["aapo", 2] / "summary.json").read_text())["steps"] == 2

    # aapo plot re-renders from the directory; a directory without runs is named
    main(["plot", str(out), "--output", str(tmp_path / "plots"), "--baseline", "aapo"])
    assert "## Paired difference to aapo" in (tmp_path / "plots" / "report.md").read_text()
    (tmp_path / "nothing").mkdir()
    with pytest.raises(SystemExit) as exit_info:
        main(["plot", str(tmp_path / "nothing")])
    assert exit_info.value.code == 2
    assert "nothing has no metrics.jsonl" in capsys.readouterr().err
