"""`aapo reference` end to end on the bundled model: the cache it writes opens under the same
config `aapo train` reads; a SIGKILL mid-way and a rerun give the uninterrupted bytes; two real
processes (torchrun, CPU) fill one cache identical to one process's."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from aapo.config import load_config
from aapo.data.datasets import load_problems
from aapo.models import load_model, load_tokenizer
from aapo.rollout.reference_cache import ReferenceCache, reference_fingerprint
from aapo.training.config import TrainConfig
from aapo.training.trainer import prepare_rows

# 16 prompts, G=2, 2 draws, 8 tokens; 2 sequences per generate call → 1 prompt per shard
ARGS = [
    "--dataset_size", "16",
    "--num_generations", "2",
    "--max_completion_length", "8",
    "--per_device_train_batch_size", "4",
    "--gradient_accumulation_steps", "1",
    "--reference_batch_size", "2",
    "--reference_draws", "2",
]  # fmt: skip
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "true"}


def _command(directory: Path, launcher: list[str] | None = None) -> list[str]:
    head = launcher or [sys.executable, "-m"]
    return [*head, "aapo", "reference", "--reference_cache", str(directory), *ARGS]


def _run(directory: Path, launcher: list[str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        _command(directory, launcher), env=ENV, capture_output=True, text=True, timeout=600
    )


def _files(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    directory = tmp_path_factory.mktemp("cli") / "ref"
    result = _run(directory)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == str(directory)
    return directory


def test_the_cache_opens_under_the_config_train_reads(uninterrupted):
    config = load_config(TrainConfig, "default", ARGS)  # what `aapo train` would build
    tokenizer = load_tokenizer(config.model_name_or_path)
    raw = load_problems(config.dataset_name, config.dataset_split, config.seed, config.dataset_size)
    rows, _ = prepare_rows(raw, tokenizer, config)
    model = load_model(config.model_name_or_path, config.dtype)
    cache = ReferenceCache.open(
        uninterrupted, reference_fingerprint(config, model, rows, tokenizer)
    )
    assert cache.tensors["rewards"].shape == (16, 2, 2)
    assert len(list(uninterrupted.glob("shard-*.safetensors"))) == 16


def test_without_reference_cache_the_command_names_the_key():
    result = subprocess.run(
        [sys.executable, "-m", "aapo", "reference", *ARGS],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "aapo reference: error: aapo reference needs reference_cache" in result.stderr


def test_sigkill_mid_way_then_rerun_gives_the_uninterrupted_cache(uninterrupted, tmp_path):
    directory = tmp_path / "ref"
    process = subprocess.Popen(
        _command(directory), env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 300
    while not (directory / "shard-00000.safetensors").exists():
        assert process.poll() is None and time.monotonic() < deadline, "no shard was written"
        time.sleep(0.005)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    written = len(list(directory.glob("shard-*.safetensors")))
    assert not (directory / "manifest.json").exists() and 1 <= written < 16
    result = _run(directory)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"({written} already done)" in result.stderr
    assert _files(directory) == _files(uninterrupted)


def test_two_processes_fill_one_cache_identical_to_one(uninterrupted, tmp_path):
    directory = tmp_path / "ref"
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    result = _run(directory, [*torchrun, "--nproc_per_node=2", "-m"])
    assert result.returncode == 0, result.stderr[-3000:]
    assert "process 1/2 builds 8 (0 already done)" in result.stderr
    assert _files(directory) == _files(uninterrupted)
