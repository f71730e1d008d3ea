"""Metric sinks: JSONL lines per step, resume keeps what came before, TensorBoard events."""

import json

from aapo.metrics import JsonlSink, TensorBoardSink


def _steps(path):
    return [json.loads(line)["step"] for line in path.read_text().splitlines()]


def test_jsonl_sink_writes_one_line_per_step_and_resume_drops_later_steps(tmp_path):
    path = tmp_path / "metrics.jsonl"
    sink = JsonlSink(path)
    for step in (1, 2, 3):
        sink.write(step, {"loss": float(step)})
    sink.close()
    assert _steps(path) == [1, 2, 3]
    assert json.loads(path.read_text().splitlines()[1])["loss"] == 2.0
    resumed = JsonlSink(path, resume_step=2)  # the checkpoint was at step 2
    resumed.write(3, {"loss": 30.0})
    resumed.close()
    assert _steps(path) == [1, 2, 3]
    assert json.loads(path.read_text().splitlines()[2])["loss"] == 30.0
    fresh = JsonlSink(path)  # a new run starts an empty file
    fresh.close()
    assert path.read_text() == ""


def test_tensorboard_sink_writes_events(tmp_path):
    sink = TensorBoardSink(tmp_path / "tb")
    sink.write(1, {"loss": 0.5, "reward": 1.0})
    sink.close()
    assert any(p.name.startswith("events.out.tfevents") for p in (tmp_path / "tb").iterdir())
