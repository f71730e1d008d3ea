"""`aapo reference --sampler vllm` on the bundled model: the engine fills the cache shard by shard
reproducibly (the CLI in one process, then two "processes" by hand in the other order: the same
bytes), each shard holds what the engine samples under that shard's seed, and a run that samples
with `group` opens the cache and trains on it (the sampler is not in the fingerprint).

Marked `vllm`: run where vLLM imports; in CI a missing vLLM fails them (tests/conftest.py).
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from aapo.config import load_config
from aapo.data.datasets import load_problems
from aapo.data.rows import prepare_rows
from aapo.models import load_model, load_tokenizer, resolve_model_path
from aapo.rollout import SamplingParams
from aapo.training.config import TrainConfig
from aapo.training.reference import CachedReference
from aapo.training.reference.build import build_reference_cache, shard_seed
from aapo.training.reference.cache import ReferenceCache, reference_fingerprint
from aapo.training.rollout_engine import engine_sampler
from aapo.training.trainer import Trainer

pytestmark = pytest.mark.vllm

# 16 prompts, G=2, 2 draws; 8 sequences per engine call → 4 prompts per shard, 4 shards
ARGS = [
    "--dataset_size", "16",
    "--num_generations", "2",
    "--max_completion_length", "48",
    "--per_device_train_batch_size", "4",
    "--gradient_accumulation_steps", "1",
    "--reference_batch_size", "8",
    "--reference_draws", "2",
]  # fmt: skip


def _files(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def _config(directory: Path, sampler: str = "vllm") -> TrainConfig:
    """What `aapo reference`/`aapo train` build from ARGS (recipe `default`)."""
    config = load_config(TrainConfig, "default", ARGS)
    return replace(config, sampler=sampler, reference_cache=str(directory))


@pytest.fixture(scope="module")
def cli_cache(tmp_path_factory) -> Path:
    """`aapo reference --sampler vllm`, one process, this process's thread count."""
    directory = tmp_path_factory.mktemp("vllm-ref") / "ref"
    env = {
        **os.environ,
        "OMP_NUM_THREADS": str(torch.get_num_threads()),  # the engine computes on as many
        "ACCELERATE_USE_CPU": "true",
    }
    command = [sys.executable, "-m", "aapo", "reference", "--sampler", "vllm"]
    result = subprocess.run(
        [*command, "--reference_cache", str(directory), *ARGS],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == str(directory)
    assert "process 0/1 builds 4 of 4 shards" in result.stderr
    return directory


def test_shards_do_not_depend_on_the_process_that_built_them(cli_cache, tmp_path):
    """Process 1 takes shards 1 and 3 first, on a fresh engine; then process 0 takes 0 and 2."""
    directory = tmp_path / "ref"
    for index in (1, 0):
        build_reference_cache(_config(directory), process_index=index, num_processes=2)
    assert _files(directory) == _files(cli_cache)


def test_a_shard_holds_what_the_engine_samples_under_its_seed(cli_cache):
    config = _config(cli_cache)
    tokenizer = load_tokenizer(config.model_name_or_path)
    raw = load_problems(config.dataset_name, config.dataset_split, config.seed, config.dataset_size)
    rows, _ = prepare_rows(
        raw, tokenizer, config.system_prompt, config.prompt_template, config.max_prompt_length
    )
    shard, draws, G = 2, 2, 2  # rows 8..11
    model_path = resolve_model_path(config.model_name_or_path)
    sampler = engine_sampler(config, model_path, "cpu", seed=0, sequences=8)  # the build's engine
    params = SamplingParams(G, config.temperature, config.top_p, config.max_completion_length)
    torch.manual_seed(shard_seed(config.seed, shard))
    groups = sampler.generate([r.prompt_ids for r in rows[8:12] for _ in range(draws)], params)
    lengths = torch.tensor([[len(s.completion_ids) for s in group] for group in groups])

    model = load_model(config.model_name_or_path, config.dtype)
    cache = ReferenceCache.open(cli_cache, reference_fingerprint(config, model, rows, tokenizer))
    assert torch.equal(cache.tensors["lengths"][8:12].reshape(4 * draws, G), lengths.int())


def test_a_run_sampling_with_group_opens_the_cache_and_trains_on_it(cli_cache, tmp_path):
    config = replace(
        _config(cli_cache, sampler="group"),
        max_steps=1,
        learning_rate=1e-3,
        eval_num_problems=0,
        report_to=[],
        output_dir=str(tmp_path / "run"),
    )
    trainer = Trainer(config)
    assert isinstance(trainer.parts.reference, CachedReference)
    assert trainer.reference_model is None  # nothing samples the reference in the step
    metrics = trainer.train()["final_metrics"]
    assert "ref_reward" in metrics and metrics["momentum/mean"] != 0
