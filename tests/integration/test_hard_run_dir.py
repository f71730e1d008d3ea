"""A run directory belongs to one run: a second `aapo train` (or `aapo reference`) writing it
is refused at start, naming the first; a fresh run does not land on a finished one unless it
resumes it or replaces it on purpose. Every refusal comes before any model loads."""

import json
import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from aapo.config import ConfigError
from aapo.locks import LOCK_FILE, DirectoryInUseError
from aapo.training import builders
from aapo.training import checkpoint as ckpt
from aapo.training.config import TrainConfig
from aapo.training.trainer import Trainer

HERE = Path(__file__).resolve().parent
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
CLI = [
    "--num_generations", "4", "--per_device_train_batch_size", "4",
    "--gradient_accumulation_steps", "1", "--max_completion_length", "8",
    "--dataset_size", "8", "--eval_num_problems", "0", "--report_to", "[]",
]  # fmt: skip


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), *sys.path])}


def _train(*args: str) -> list[str]:
    return [sys.executable, "-m", "aapo", "train", "--config", "default", *CLI, *args]


def _steps(run: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture
def no_model(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the model loaded before the run directory was checked")

    monkeypatch.setattr(builders, "build_policy", refuse)


def test_a_second_train_into_a_running_ones_folder_is_refused_naming_it(tmp_path):
    run = tmp_path / "run"
    slow = ["--reward_funcs", "[format, 'rewards_for_tests:hang_forever']", "--reward_weights",
            "null", "--reward_timeout", "3"]  # fmt: skip
    first = subprocess.Popen(
        _train("--max_steps", "2", *slow, "--output_dir", str(run)),
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 300
        while not (run / LOCK_FILE).exists() or not (run / LOCK_FILE).read_text():
            assert first.poll() is None and time.monotonic() < deadline, "the first never locked"
            time.sleep(0.1)
        second = subprocess.run(
            _train("--max_steps", "1", "--output_dir", str(run)),
            env=_env(), capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert first.poll() is None, "the first run ended before the second was tried"
        assert second.returncode == 2, second.stderr[-3000:]
        assert f"is being written by pid {first.pid} on host" in second.stderr
        assert "Traceback" not in second.stderr and "Loading weights" not in second.stderr
        log = first.communicate(timeout=600)[0]
        assert first.returncode == 0, log[-3000:]
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert _steps(run) == [1, 2]  # the first run's lines only
    assert not (run / LOCK_FILE).exists()


def test_a_fresh_run_into_a_finished_one_is_refused_unless_replacing_it(tmp_path, monkeypatch):
    config = TrainConfig(**TINY, save_steps=1, output_dir=str(tmp_path / "run"))
    Trainer(config).train()
    run = tmp_path / "run"
    old_model = (run / "model.safetensors").read_bytes()
    assert [p.name for p in ckpt.list_checkpoints(run)] == ["checkpoint-1"]

    real_build_policy = builders.build_policy
    monkeypatch.setattr(builders, "build_policy", _no_model)
    again = replace(config, max_steps=1, save_steps=0)
    with pytest.raises(ConfigError) as info:
        Trainer(again)
    assert str(info.value) == (
        f"output_dir {run} already holds a run (checkpoint-1, config.json, config.yaml, "
        "generation_config.json, metrics.jsonl, model.safetensors); continue it with --resume, "
        "replace it with --overwrite_output_dir true, or choose another output_dir"
    )
    assert (run / "model.safetensors").read_bytes() == old_model  # untouched
    with pytest.raises(ConfigError, match=r"--resume continues .* pass one of them"):
        Trainer(replace(again, overwrite_output_dir=True, resume_from_checkpoint="latest"))

    monkeypatch.setattr(builders, "build_policy", real_build_policy)
    Trainer(replace(again, overwrite_output_dir=True)).train()
    assert _steps(run) == [1]  # the old run's lines are gone, not mixed in
    assert ckpt.list_checkpoints(run) == []  # its checkpoint cannot be resumed into this run
    assert "for 1 steps" in (run / "README.md").read_text()  # the new run's model and card
    assert not (run / LOCK_FILE).exists()


def _no_model(*args, **kwargs):
    raise AssertionError("the model loaded before the run directory was checked")


def test_a_folder_with_only_other_files_is_not_a_run(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "train.log").write_text("an outside runner's log\n")
    Trainer(TrainConfig(**{**TINY, "max_steps": 1}, output_dir=str(run))).train()
    assert (run / "train.log").read_text() == "an outside runner's log\n"


def test_a_reference_build_is_refused_while_another_holds_the_cache(tmp_path, no_model):
    from aapo.training.reference.build import build_reference_cache

    cache = tmp_path / "ref"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(cache)], env=_env(), stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        config = TrainConfig(**TINY, reference_cache=str(cache), reference_draws=1)
        with pytest.raises(DirectoryInUseError, match=rf"pid {holder.pid} on host"):
            build_reference_cache(config, process_index=0, num_processes=2)
    finally:
        holder.kill()
        holder.wait()


HOLD = """
import sys, time
from aapo.locks import DirectoryLock
lock = DirectoryLock(sys.argv[1], "aapo reference").acquire()
print("held", flush=True)
time.sleep(300)
"""


def test_a_checkpoint_of_one_run_is_not_resumed_into_another_runs_folder(tmp_path, no_model):
    from aapo.training.run_dir import check_fresh

    theirs, mine = tmp_path / "theirs", tmp_path / "mine"
    for run in (theirs, mine):
        (run / "checkpoint-2").mkdir(parents=True)
        (run / "metrics.jsonl").write_text("")
    check_fresh(mine, "latest", False)
    check_fresh(mine, str(mine / "checkpoint-2"), False)
    check_fresh(tmp_path / "empty", str(theirs / "checkpoint-2"), False)  # continued elsewhere
    with pytest.raises(ConfigError, match=r"holds another run .* than the checkpoint"):
        check_fresh(mine, str(theirs / "checkpoint-2"), False)
