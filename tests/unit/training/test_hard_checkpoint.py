"""Checkpoints: data only (no code runs on load), atomic on full disk and Ctrl-C, safe rotation,
and which config changes a resume must refuse."""

import errno
import io
import json
import random
import traceback

import numpy as np
import pytest
import torch

from aapo.training import checkpoint as ckpt


class OneProcess:
    is_main_process, process_index, num_processes = True, 0, 1

    def wait_for_everyone(self):
        pass


class Payload:
    """Unpickling this runs code: it writes `marker`."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('ran')",))


def _parts(seed=0):
    torch.manual_seed(seed)
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 / (1 + step))
    model(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    scheduler.step()
    return model, optimizer, scheduler


def _save(tmp_path, step=3, parts=None):
    model, optimizer, scheduler = parts or _parts()
    return ckpt.save_checkpoint(
        tmp_path, step, model, optimizer, scheduler, ckpt.rng_state(), OneProcess()
    )


def test_round_trip_restores_every_rng_and_the_optimizer(tmp_path):
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    random.gauss(0, 1)  # a cached gaussian is part of the state too
    np.random.standard_normal()
    path = _save(tmp_path)
    expected = (random.random(), np.random.standard_normal(), torch.rand(1).item())
    for name in ("optimizer.pt", "scheduler.pt", "rng_0.pt"):
        torch.load(path / name, weights_only=True)  # plain data: the safe loader reads it
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    model, optimizer, scheduler = _parts(seed=5)
    state = ckpt.load_checkpoint(path, model, optimizer, scheduler, OneProcess())
    assert state["step"] == 3
    assert (random.random(), np.random.standard_normal(), torch.rand(1).item()) == expected
    saved_model, saved_optimizer, _ = _parts()
    assert torch.equal(model.weight, saved_model.weight)
    assert torch.equal(
        optimizer.state_dict()["state"][0]["exp_avg"],
        saved_optimizer.state_dict()["state"][0]["exp_avg"],
    )
    assert scheduler.last_epoch == 1


@pytest.mark.parametrize("name", ["optimizer.pt", "scheduler.pt", "rng_0.pt"])
def test_a_pickled_payload_is_refused_and_never_runs(tmp_path, name):
    path = _save(tmp_path / "run")
    control = tmp_path / "control"
    torch.save({"state": Payload(control)}, tmp_path / "payload.pt")
    torch.load(tmp_path / "payload.pt", weights_only=False)  # the payload is live
    assert control.exists()
    marker = tmp_path / "marker"
    torch.save({"state": Payload(marker), "param_groups": []}, path / name)
    with pytest.raises(ckpt.CheckpointError, match=rf"refusing to load .*{name}.*could run code"):
        ckpt.load_checkpoint(path, *_parts(), OneProcess())
    assert not marker.exists()


def test_an_old_numpy_pickled_rng_file_is_refused_by_name(tmp_path):
    path = _save(tmp_path)
    torch.save({"numpy": np.random.get_state(), "python": random.getstate()}, path / "rng_0.pt")
    with pytest.raises(ckpt.CheckpointError, match=r"refusing to load .*rng_0\.pt"):
        ckpt.load_checkpoint(path, *_parts(), OneProcess())


def test_a_full_disk_gives_one_clear_error_and_no_tmp_folder(tmp_path, monkeypatch):
    def full(obj, path):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ckpt, "_save_torch", full)
    with pytest.raises(ckpt.CheckpointError) as info:
        _save(tmp_path, step=7)
    assert str(info.value) == f"no space left on device while writing checkpoint-7 to {tmp_path}"
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_ctrl_c_inside_a_save_leaves_no_half_checkpoint_and_a_retry_works(tmp_path, monkeypatch):
    real = ckpt._save_torch
    calls = {"n": 0}

    def interrupted_once(obj, path):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        real(obj, path)

    monkeypatch.setattr(ckpt, "_save_torch", interrupted_once)
    with pytest.raises(KeyboardInterrupt):
        _save(tmp_path, step=4)
    assert list(tmp_path.iterdir()) == [] and ckpt.list_checkpoints(tmp_path) == []
    path = _save(tmp_path, step=4)
    assert ckpt.list_checkpoints(tmp_path) == [path]
    assert json.loads((path / "trainer_state.json").read_text())["step"] == 4


def test_rotate_keeps_the_latest_and_never_the_one_just_written(tmp_path):
    parts = _parts()
    for step in (2, 4, 6):
        _save(tmp_path, step, parts)
    with pytest.raises(ValueError, match="save_total_limit must be at least 1"):
        ckpt.rotate(tmp_path, 0)
    assert len(ckpt.list_checkpoints(tmp_path)) == 3
    ckpt.rotate(tmp_path, 2)
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["checkpoint-4", "checkpoint-6"]
    # resumed from an earlier step: checkpoint-3 is newer than 4 and 6 in this run's timeline
    written = _save(tmp_path, 3, parts)
    ckpt.rotate(tmp_path, 1, newest=written)
    assert ckpt.list_checkpoints(tmp_path) == [written]


def test_rewriting_a_step_replaces_the_old_checkpoint_whole(tmp_path):
    parts = _parts()
    first = _save(tmp_path, 5, parts)
    (first / "stale").write_text("x")
    second = _save(tmp_path, 5, parts)
    assert second == first and not (second / "stale").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-5"]


def test_trajectory_config_differences_ignores_bookkeeping_only():
    saved = {"learning_rate": 1e-3, "output_dir": "a", "logging_steps": 1, "max_steps": 10,
             "save_total_limit": 2, "eval_num_problems": 50, "report_to": []}  # fmt: skip
    same_trajectory = {**saved, "output_dir": "b", "logging_steps": 5, "save_total_limit": 3,
                       "eval_num_problems": 0, "report_to": ["tensorboard"]}  # fmt: skip
    assert ckpt.trajectory_config_differences(saved, same_trajectory) == []
    changed = {**saved, "learning_rate": 2e-3, "max_steps": 20, "beta": 0.1}
    assert ckpt.trajectory_config_differences(saved, changed) == [
        "beta: (absent) → 0.1",
        "learning_rate: 0.001 → 0.002",
        "max_steps: 10 → 20",
    ]
    assert ckpt.trajectory_config_differences(saved, {**saved, "max_steps": 10.0}) == []


class InterruptedFile(io.FileIO):
    """A file whose second write is cut by Ctrl-C, as a SIGINT landing inside torch.save's
    write callback does."""

    writes = 0

    def write(self, data):
        type(self).writes += 1
        if type(self).writes == 2:
            raise KeyboardInterrupt
        return super().write(data)


def test_ctrl_c_inside_torch_save_is_a_keyboard_interrupt_not_a_torch_error(tmp_path, monkeypatch):
    def save_torch(obj, path):
        with InterruptedFile(path, "wb") as handle:
            torch.save(obj, handle)  # torch wraps the interrupt in a RuntimeError

    monkeypatch.setattr(ckpt, "_save_torch", save_torch)
    with pytest.raises(KeyboardInterrupt) as info:
        _save(tmp_path, step=2)
    shown = "".join(traceback.format_exception(info.value))
    assert "inline_container" not in shown and "RuntimeError" not in shown
    assert list(tmp_path.iterdir()) == []


def test_ctrl_c_makes_the_command_line_stop_quietly(monkeypatch, capsys):
    from aapo import cli
    from aapo.training import trainer

    def interrupted(config):
        raise KeyboardInterrupt

    monkeypatch.setattr(trainer, "train", interrupted)
    try:
        cli.main(["train", "--max_steps", "1"])
    except KeyboardInterrupt:
        pytest.fail("Ctrl-C escaped the command line with a traceback")
    except SystemExit as exit:
        assert exit.code == 130
    else:
        pytest.fail("no exit status")
    assert capsys.readouterr().err.strip() == "aapo train: interrupted"
