"""`aapo reference` end to end on the bundled model: the cache it writes opens under the same
config `aapo train` reads; a SIGKILL mid-way and a rerun give the uninterrupted bytes; two real
processes (torchrun, CPU) fill one cache identical to one process's."""

import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from aapo.config import load_config
from aapo.data.datasets import load_problems
from aapo.data.rows import prepare_rows
from aapo.models import load_model, load_tokenizer
from aapo.rollout import SAMPLERS
from aapo.training.config import TrainConfig
from aapo.training.reference import CachedReference
from aapo.training.reference.build import build_reference_cache, shard_seed
from aapo.training.reference.cache import ReferenceCache, reference_fingerprint
from aapo.training.step import train_round
from aapo.training.trainer import Trainer

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
    rows, _ = prepare_rows(
        raw, tokenizer, config.system_prompt, config.prompt_template, config.max_prompt_length
    )
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
    assert "process 1/2 builds 8 of 16 shards (0 already done)" in result.stderr
    assert _files(directory) == _files(uninterrupted)


MEANS = ("mean", "std")


class SeededAsShard:
    """In-step reference sampling with the RNG a cache shard is sampled with."""

    def __init__(self, inner, seed: int, shard: int) -> None:
        self.inner, self.seed, self.shard = inner, seed, shard

    def generate(self, prompts, params):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(shard_seed(self.seed, self.shard))
            return self.inner.generate(prompts, params)


def test_a_step_on_cached_rewards_equals_one_sampling_the_same_reference_draws(tmp_path):
    config = TrainConfig(
        num_generations=2,
        per_device_train_batch_size=8,  # 4 prompts per step: one shard of the cache
        gradient_accumulation_steps=1,
        max_completion_length=24,
        dataset_size=16,
        max_steps=1,
        learning_rate=1e-3,
        report_to=[],
        output_dir=str(tmp_path / "run"),
        reference_cache=str(tmp_path / "ref"),
        reference_batch_size=8,
        reference_draws=1,
    )
    build_reference_cache(config, process_index=0, num_processes=1)
    cached = Trainer(config)
    assert isinstance(cached.parts.reference, CachedReference) and cached.reference_model is None
    # a second trainer needs a folder of its own: output_dir is one trainer's at a time
    sampling = Trainer(replace(config, reference_cache=None, output_dir=str(tmp_path / "run2")))
    inner = SAMPLERS[config.sampler](
        sampling.reference_model, sampling.tokenizer, max_batch_size=config.reference_batch_size
    )
    sampling.parts.reference.sampler = SeededAsShard(inner, config.seed, shard=1)

    shard_rows = slice(4, 8)  # the step meets shard 1's prompts, in its order, in epoch 0
    torch.manual_seed(0)  # one global RNG: both policies draw the same samples
    with_cache = next(train_round(cached.parts, cached.rows[shard_rows], list)).metrics
    torch.manual_seed(0)
    in_step = next(train_round(sampling.parts, sampling.rows[shard_rows], list)).metrics
    for key in ("ref_reward", "momentum/mean", "momentum/clip_low_frac", "momentum/clip_high_frac"):
        assert key in with_cache, key
    assert with_cache["momentum/mean"] != 0  # the reference rewards reached the advantages
    # grader event counts (rewards/<name>/no_answer, ...) cover both sides when the reference
    # is scored in the step, only the policy's with a cache
    events = {k for k in in_step if k.startswith("rewards/") and k.split("/")[-1] not in MEANS}
    assert events and set(with_cache) == set(in_step)
    for key in set(in_step) - events:
        if not key.startswith("time/"):
            assert with_cache[key] == pytest.approx(in_step[key], abs=0, nan_ok=True), key
