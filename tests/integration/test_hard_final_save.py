"""A failed final save loses nothing and leaves nothing half-written: the model's files are
staged and moved into place, and a checkpoint of the final step (or the last one) is named."""

import errno
import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from aapo.training import checkpoint as ckpt
from aapo.training import trainer as trainer_module
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
    "max_steps": 2,
}


def _config(tmp_path: Path, **overrides) -> TrainConfig:
    return TrainConfig(**{**TINY, "output_dir": str(tmp_path / "run"), **overrides})


def full_disk_model_save(model, output_dir, dtype, state_dict=None):
    """save_pretrained on a full disk: config.json created, nothing written into it."""
    (Path(output_dir) / "config.json").write_bytes(b"")
    raise OSError(errno.ENOSPC, "No space left on device")


def _steps(run: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_a_full_disk_at_the_final_save_keeps_the_final_step_as_a_checkpoint(tmp_path, monkeypatch):
    config = _config(tmp_path)  # save_steps 0: no checkpoint before the end
    monkeypatch.setattr(trainer_module, "save_pretrained_as", full_disk_model_save)
    with pytest.raises(ckpt.CheckpointError) as info:
        Trainer(config).train()
    run = tmp_path / "run"
    assert str(info.value) == (
        f"the final model could not be saved to {run} (no space left on device); "
        f"{run / 'checkpoint-2'} holds step 2 of 2: resume with --resume {run / 'checkpoint-2'}"
    )
    assert not (run / "config.json").exists()  # no empty file posing as the model's config
    assert not (run / trainer_module.FINAL_STAGING).exists()
    assert [p.name for p in ckpt.list_checkpoints(run)] == ["checkpoint-2"]
    kept = load_file(run / "checkpoint-2" / "model.safetensors")

    monkeypatch.undo()  # space freed: the resume only saves
    summary = Trainer(replace(config, resume_from_checkpoint="latest")).train()
    assert summary["steps"] == 2 and _steps(run) == [1, 2]
    saved = load_file(run / "model.safetensors")
    assert all(torch.equal(kept[name], saved[name]) for name in kept)  # the trained weights


def test_when_the_checkpoint_fails_too_the_last_one_is_named(tmp_path, monkeypatch):
    config = _config(tmp_path, save_steps=1)
    real = ckpt._save_weights

    def full_after_step_1(tensors, path):
        if "checkpoint-1" not in str(path):
            raise OSError(errno.ENOSPC, "No space left on device")
        real(tensors, path)

    monkeypatch.setattr(trainer_module, "save_pretrained_as", full_disk_model_save)
    monkeypatch.setattr(ckpt, "_save_weights", full_after_step_1)
    with pytest.raises(ckpt.CheckpointError, match=r"checkpoint-1 holds step 1 of 2: resume"):
        Trainer(config).train()
    run = tmp_path / "run"
    assert [p.name for p in ckpt.list_checkpoints(run)] == ["checkpoint-1"]
    assert sorted(p.name for p in run.iterdir()) == ["checkpoint-1", "config.yaml", "metrics.jsonl"]


def test_with_no_checkpoint_at_all_the_error_says_the_steps_are_lost(tmp_path, monkeypatch):
    def no_space(tensors, path):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(trainer_module, "save_pretrained_as", full_disk_model_save)
    monkeypatch.setattr(ckpt, "_save_weights", no_space)
    with pytest.raises(ckpt.CheckpointError, match=r"no checkpoint holds this run's steps"):
        Trainer(_config(tmp_path)).train()
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["config.yaml", "metrics.jsonl"]


def test_ctrl_c_in_the_final_save_stops_quietly_with_the_final_step_kept(tmp_path, monkeypatch):
    def interrupted(model, output_dir, dtype, state_dict=None):
        (Path(output_dir) / "config.json").write_bytes(b"")
        raise KeyboardInterrupt

    monkeypatch.setattr(trainer_module, "save_pretrained_as", interrupted)
    with pytest.raises(KeyboardInterrupt):
        Trainer(_config(tmp_path)).train()
    run = tmp_path / "run"
    assert [p.name for p in ckpt.list_checkpoints(run)] == ["checkpoint-2"]
    assert sorted(p.name for p in run.iterdir()) == ["checkpoint-2", "config.yaml", "metrics.jsonl"]
