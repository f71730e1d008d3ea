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


def _state(path):
    return json.loads((path / "trainer_state.json").read_text())


def _write_state(path, state):
    (path / "trainer_state.json").write_text(json.dumps(state))


def _record_sizes(path):
    """What a checkpoint crafted to pass the size check records: its files as they are now."""
    state = _state(path)
    state["files"] = {name: (path / name).stat().st_size for name in state["files"]}
    _write_state(path, state)


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
    _record_sizes(path)  # crafted whole: its trainer_state.json vouches for the new file
    with pytest.raises(ckpt.CheckpointError, match=rf"refusing to load .*{name}.*could run code"):
        ckpt.load_checkpoint(path, *_parts(), OneProcess())
    assert not marker.exists()


def test_an_old_numpy_pickled_rng_file_is_refused_by_name(tmp_path):
    path = _save(tmp_path)
    torch.save({"numpy": np.random.get_state(), "python": random.getstate()}, path / "rng_0.pt")
    _record_sizes(path)
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


# what is read back is checked before it is trusted -------------------------------------------


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("step", -5, r"field 'step' must be an integer >= 1, got -5"),
        ("step", 2.5, r"field 'step' must be an integer >= 1, got 2.5"),
        ("step", "3", r"field 'step' must be an integer >= 1, got '3'"),
        ("step", True, r"field 'step' must be an integer >= 1, got True"),
        ("step", None, r"field 'step' must be an integer >= 1, got None"),
        ("step", 4, r"field 'step' is 4 but the folder is checkpoint-3"),
        ("num_processes", 0, r"field 'num_processes' must be an integer >= 1, got 0"),
        ("num_processes", "1", r"field 'num_processes' must be an integer >= 1, got '1'"),
        ("num_processes", 2, r"field 'num_processes' is 2: .* resume it with as many"),
        ("data_cursor", -8, r"field 'data_cursor' must be an integer >= 0, got -8"),
        ("data_cursor", 1e3, r"field 'data_cursor' must be an integer >= 0, got 1000.0"),
        ("config", ["lr"], r"field 'config' must be a mapping, got \['lr'\]"),
        ("files", {"model.safetensors": -1}, r"field 'files' must map file names to sizes"),
        ("files", {"scheduler.pt": 10}, r"field 'files' does not list \['model.safetensors'"),
    ],
)
def test_every_trainer_state_field_is_checked_naming_file_and_field(
    tmp_path, field, value, message
):
    path = _save(tmp_path)
    state = _state(path)
    state[field] = value
    _write_state(path, state)
    with pytest.raises(ckpt.CheckpointError, match=message) as info:
        ckpt.load_checkpoint(path, *_parts(), OneProcess())
    assert str(path / "trainer_state.json") in str(info.value)


def test_trainer_state_that_is_not_an_object_is_refused(tmp_path):
    path = _save(tmp_path)
    (path / "trainer_state.json").write_text("[3, 1]")
    with pytest.raises(ckpt.CheckpointError, match=r"trainer_state.json must hold a JSON object"):
        ckpt.load_checkpoint(path, *_parts(), OneProcess())


@pytest.mark.parametrize("name", ["model.safetensors", "optimizer.pt", "scheduler.pt", "rng_0.pt"])
def test_a_truncated_file_is_reported_corrupt_by_name(tmp_path, name):
    path = _save(tmp_path)
    data = (path / name).read_bytes()
    (path / name).write_bytes(data[: len(data) // 2])
    with pytest.raises(ckpt.CheckpointError, match=rf"{name} is corrupt: .* records {len(data)} "):
        ckpt.load_checkpoint(path, *_parts(), OneProcess())


@pytest.mark.parametrize("name", ["model.safetensors", "optimizer.pt", "scheduler.pt", "rng_0.pt"])
@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_a_damaged_file_is_corrupt_not_code_even_where_its_size_is_not_recorded(
    tmp_path, name, damage
):
    path = _save(tmp_path)
    state = _state(path)
    del state["files"]  # as a checkpoint of an earlier aapo: only the formats can tell
    _write_state(path, state)
    data = (path / name).read_bytes()
    damaged = {
        "truncated": data[: len(data) // 2],
        "garbage": bytes(range(256)) * (len(data) // 256 + 1),
        "empty": b"",
    }[damage]
    (path / name).write_bytes(damaged)
    with pytest.raises(ckpt.CheckpointError, match=rf"{name} is corrupt") as info:
        ckpt.load_checkpoint(path, *_parts(), OneProcess())
    assert "could run code" not in str(info.value)


def test_a_missing_rng_file_of_another_process_is_found(tmp_path):
    path = _save(tmp_path)
    state = _state(path)
    state["num_processes"] = 2
    _write_state(path, state)

    class SecondOfTwo(OneProcess):
        process_index, num_processes, is_main_process = 1, 2, False

    with pytest.raises(ckpt.CheckpointError, match=r"rng_1.pt is missing"):
        ckpt.load_checkpoint(path, *_parts(), SecondOfTwo())


def test_weights_of_another_shape_are_refused_naming_the_tensor(tmp_path):
    path = _save(tmp_path)
    model = torch.nn.Linear(3, 4)  # 4 outputs, the checkpoint's model had 2
    optimizer = torch.optim.AdamW(model.parameters())
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    with pytest.raises(ckpt.CheckpointError, match=r"tensor 'weight' is \(2, 3\).*\(4, 3\)"):
        ckpt.load_checkpoint(path, model, optimizer, scheduler, OneProcess())


def test_optimizer_state_shaped_for_another_parameter_is_refused(tmp_path):
    path = _save(tmp_path)
    state = torch.load(path / "optimizer.pt", weights_only=True)
    state["state"][0]["exp_avg"] = torch.zeros(5)
    torch.save(state, path / "optimizer.pt")
    _record_sizes(path)
    with pytest.raises(ckpt.CheckpointError, match=r"optimizer.pt: 'exp_avg' of parameter 0"):
        ckpt.load_checkpoint(path, *_parts(), OneProcess())


def test_rng_states_that_cannot_be_restored_name_the_file(tmp_path):
    path = _save(tmp_path)
    rng = torch.load(path / "rng_0.pt", weights_only=True)
    rng["python"]["state"] = [1, 2, 3]
    torch.save(rng, path / "rng_0.pt")
    _record_sizes(path)
    with pytest.raises(ckpt.CheckpointError, match=r"rng_0.pt does not fit this run"):
        ckpt.load_checkpoint(path, *_parts(), OneProcess())


class Layout:
    steps_per_generation_batch, generation_prompts = 2, 4


@pytest.mark.parametrize(
    ("step", "cursor", "refills", "message"),
    [
        (4, 8, 1, None),
        (5, 12, 1, None),  # the run's last step, mid generation batch
        (4, 12, 2, None),  # refilled batches draw more
        (6, 12, 1, r"field 'step' is 6, past this run's 5 steps"),
        (3, 8, 1, r"field 'step' is 3, not the end of a generation batch \(2 steps each\)"),
        (
            4,
            12,
            1,
            r"field 'data_cursor' is 12, but 2 generation batches of 4 prompts put step 4 at 8",
        ),
        (4, 10, 2, r"data_cursor' is 10, .* at a multiple of 4 in \[8, 16\]"),
        (4, 20, 2, r"data_cursor' is 20"),
    ],
)
def test_step_and_cursor_must_be_where_this_run_would_checkpoint(
    tmp_path, step, cursor, refills, message
):
    path = tmp_path / f"checkpoint-{step}"
    state = {"step": step, "num_processes": 1, "data_cursor": cursor}
    if message is None:
        ckpt.check_position(path, state, 5, Layout(), refills)
        return
    with pytest.raises(ckpt.CheckpointError, match=message) as info:
        ckpt.check_position(path, state, 5, Layout(), refills)
    assert str(path / "trainer_state.json") in str(info.value)
