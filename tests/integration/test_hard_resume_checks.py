"""A resume checks the checkpoint's trainer_state.json against the folder, its files and this
run's batch layout before any model loads; a failure names the file and the field."""

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from aapo.training import builders
from aapo.training.checkpoint import CheckpointError
from aapo.training.config import TrainConfig
from aapo.training.trainer import Trainer

TINY = {
    "num_generations": 4,
    "per_device_train_batch_size": 8,
    "gradient_accumulation_steps": 1,
    "max_completion_length": 8,
    "dataset_size": 16,
    "learning_rate": 1e-3,
    "report_to": [],
    "reward_funcs": ["format"],
    "max_steps": 3,
    "save_steps": 2,
}


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A 3-step run with checkpoint-2 (its state is copied into each test's folder)."""
    run = tmp_path_factory.mktemp("finished") / "run"
    Trainer(TrainConfig(**TINY, output_dir=str(run))).train()
    return run


@pytest.fixture
def run(tmp_path, finished) -> Path:
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(finished, copy)
    return copy


def _edit(run: Path, **fields) -> Path:
    path = run / "checkpoint-2" / "trainer_state.json"
    state = json.loads(path.read_text())
    state.update(fields)
    path.write_text(json.dumps(state))
    return path


@pytest.fixture
def no_model(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the model loaded before the checkpoint was checked")

    monkeypatch.setattr(builders, "build_policy", refuse)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"step": -5}, r"field 'step' must be an integer >= 1, got -5"),
        ({"step": 2.5}, r"field 'step' must be an integer >= 1, got 2.5"),
        ({"step": 3}, r"field 'step' is 3 but the folder is checkpoint-2"),
        (
            {"data_cursor": 6},
            r"field 'data_cursor' is 6, but 2 generation batches of 2 prompts put step 2 at 4",
        ),
        ({"data_cursor": -2}, r"field 'data_cursor' must be an integer >= 0, got -2"),
        ({"num_processes": 2}, r"field 'num_processes' is 2"),
    ],
)
def test_a_bad_field_is_refused_before_the_model_loads(run, no_model, fields, message):
    state_file = _edit(run, **fields)
    before = (run / "metrics.jsonl").read_text()
    config = TrainConfig(**TINY, output_dir=str(run), resume_from_checkpoint="latest")
    with pytest.raises(CheckpointError, match=message) as info:
        Trainer(config)
    assert str(state_file) in str(info.value)
    assert (run / "metrics.jsonl").read_text() == before  # nothing rewritten


def test_a_truncated_weights_file_is_refused_by_name_before_the_model_loads(run, no_model):
    weights = run / "checkpoint-2" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    config = TrainConfig(**TINY, output_dir=str(run), resume_from_checkpoint="latest")
    with pytest.raises(CheckpointError, match=rf"{weights} is corrupt: .* records \d+ bytes"):
        Trainer(config)


def test_a_step_past_the_run_is_refused_even_with_changed_settings(run, no_model):
    config = TrainConfig(**{**TINY, "max_steps": 1, "save_steps": 1}, output_dir=str(run))
    config = replace(config, resume_from_checkpoint="latest", resume_config_changes=True)
    with pytest.raises(CheckpointError, match=r"field 'step' is 2, past this run's 1 steps"):
        Trainer(config)


def test_with_changed_settings_the_fields_are_still_checked(run, no_model):
    _edit(run, data_cursor=-1)
    config = TrainConfig(**{**TINY, "learning_rate": 5e-4}, output_dir=str(run))
    config = replace(config, resume_from_checkpoint="latest", resume_config_changes=True)
    with pytest.raises(CheckpointError, match=r"field 'data_cursor' must be an integer >= 0"):
        Trainer(config)


def test_the_command_line_reports_it_in_one_line(run):
    _edit(run, step=-5)
    env = {**os.environ, "PYTHONPATH": os.environ.get("PYTHONPATH", "")}
    args = [f"--{k}={json.dumps(v)}" for k, v in TINY.items()] + ["--reward_weights=null"]
    done = subprocess.run(
        [sys.executable, "-m", "aapo", "train", *args, "--output_dir", str(run), "--resume"],
        env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    assert "trainer_state.json: field 'step' must be an integer >= 1, got -5" in done.stderr
