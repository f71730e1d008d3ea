"""End-to-end training on the bundled tiny model, offline, with tiny budgets."""

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from aapo.models import load_tokenizer
from aapo.training.config import TrainConfig
from aapo.training.trainer import Trainer

HERE = Path(__file__).resolve().parent
TINY = {
    "num_generations": 4,
    "per_device_train_batch_size": 8,
    "gradient_accumulation_steps": 1,
    "max_completion_length": 24,
    "dataset_size": 64,
    "learning_rate": 1e-3,
    "report_to": [],
}


sys.path.insert(0, str(HERE))  # rewards_for_tests, by import path


def _config(tmp_path, **overrides) -> TrainConfig:
    return TrainConfig(**{**TINY, "output_dir": str(tmp_path / "run"), "max_steps": 1, **overrides})


class CraftedSampler:
    """Returns the same G completions for every prompt: half box 1 (reward 1), half box 2."""

    def __init__(self, tokenizer, group_size):
        texts = [
            "<think> 1 </think> <answer> \\boxed{1} </answer>",
            "<think> 2 </think> <answer> \\boxed{2} </answer>",
        ]
        self.ids = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
        self.texts, self.group_size = texts, group_size

    def generate(self, prompts, params):
        from aapo.rollout import Sample

        return [
            [Sample(list(self.ids[i % 2]), self.texts[i % 2], False) for i in range(params.n)]
            for _ in prompts
        ]


def _advantage_weighted_logp(trainer, sampler):
    """Σ_i sign(A_i) Σ_t log π(o_i,t), averaged over the training prompts: rises when the steps
    favour the rewarded completions (one prompt alone can move against the batch's update)."""
    from aapo.training.logprobs import completion_logprobs, pack

    prompts = [row.prompt_ids for row in trainer.rows]
    rewarded, other = sampler.ids
    ids, attention, mask = pack(
        prompts * 2, [rewarded] * len(prompts) + [other] * len(prompts), trainer.parts.pad_id
    )
    with torch.no_grad():
        logps = (completion_logprobs(trainer.model, ids, attention, mask.shape[1]) * mask).sum(1)
    return (logps[: len(prompts)] - logps[len(prompts) :]).mean().item()


@pytest.mark.parametrize("algorithm", ["aapo", "grpo", "dr_grpo", "dapo", "gpg"])
def test_every_algorithm_moves_towards_rewarded_completions(tmp_path, algorithm):
    config = _config(
        tmp_path,
        algorithm=algorithm,
        max_steps=2,
        learning_rate=1e-4,
        reward_funcs=["rewards_for_tests:boxed_one"],
    )
    sampler = CraftedSampler(load_tokenizer(config.model_name_or_path), config.num_generations)
    trainer = Trainer(config, policy_sampler=sampler, reference_sampler=sampler)
    before_params = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    before = _advantage_weighted_logp(trainer, sampler)
    summary = trainer.train()
    assert _advantage_weighted_logp(trainer, sampler) > before
    after = trainer.model.state_dict()
    assert any(not torch.equal(before_params[k], after[k]) for k in before_params)
    metrics = [
        json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    ]
    assert [m["step"] for m in metrics] == [1, 2]
    for key in (
        "reward",
        "frac_reward_zero_std",
        "advantage/zero_frac",
        "grad_norm",
        "loss",
        "completions/mean_length",
        "time/policy_generation",
        "rewards/boxed_one/mean",
    ):
        assert key in metrics[-1]
    assert metrics[-1]["frac_reward_zero_std"] == 0.0 and metrics[-1]["reward"] == 0.5
    assert ("ref_reward" in metrics[-1]) == (algorithm == "aapo")
    assert ("momentum/mass_share" in metrics[-1]) == (algorithm == "aapo")
    by_level = {k: v for k, v in metrics[-1].items() if k.startswith("ties/level_")}
    assert by_level and set(by_level.values()) == {0.0}  # synthetic rows carry their level
    assert (tmp_path / "run" / "model.safetensors").exists()
    assert "Final metrics" in (tmp_path / "run" / "README.md").read_text()
    assert summary["steps"] == 2


def test_reference_is_frozen_initial_weights_and_samples_from_them(tmp_path):
    trainer = Trainer(_config(tmp_path, max_steps=3, beta=0.0))
    initial = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    reference = trainer.reference_model
    assert reference is not None and reference is not trainer.model
    assert trainer.parts.reference.sampler.model is reference  # reference samples come from it
    trainer.train()
    for key, value in reference.state_dict().items():
        assert torch.equal(value, initial[key]), key
    assert any(not torch.equal(initial[k], v) for k, v in trainer.model.state_dict().items())


def test_lora_reference_is_adapter_disabled_base(tmp_path):
    pytest.importorskip("peft")
    from aapo.training.reference.frozen import AdapterDisabledSampler

    trainer = Trainer(_config(tmp_path, use_peft=True, lora_r=4, max_steps=1))
    assert trainer.reference_model is None
    assert isinstance(trainer.parts.reference.sampler, AdapterDisabledSampler)
    base = {k: v.clone() for k, v in trainer.model.state_dict().items() if "lora" not in k}
    trainer.train()
    for key, value in trainer.model.state_dict().items():
        if "lora" not in key:
            assert torch.equal(value, base[key]), key


def test_malformed_dataset_row_stops_before_training(tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text(
        json.dumps({"problem": "1+1", "answer": "2"}) + "\n" + json.dumps({"problem": "x"}) + "\n"
    )
    with pytest.raises(ValueError, match=rf"{data}:2: row has no an answer"):
        Trainer(_config(tmp_path, dataset_name=str(data)))


def _run_cli(args, env_extra=None):
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
        **(env_extra or {}),
    }
    return subprocess.run(
        [sys.executable, "-m", "aapo", "train", "--config", "default", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def _strip_times(path):
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return [{k: v for k, v in row.items() if not k.startswith("time/")} for row in rows]


def test_sigkill_and_resume_reproduces_uninterrupted_run(tmp_path):
    common = [
        "--num_generations",
        "4",
        "--per_device_train_batch_size",
        "8",
        "--gradient_accumulation_steps",
        "1",
        "--max_completion_length",
        "24",
        "--dataset_size",
        "64",
        "--max_steps",
        "4",
        "--save_steps",
        "2",
        "--eval_num_problems",
        "0",
        "--report_to",
        "[]",
        "--learning_rate",
        "1e-3",
        "--reward_funcs",
        "[format, accuracy, 'rewards_for_tests:reward']",
        "--reward_weights",
        "[0.5, 1.0, 1.0]",
    ]
    whole = _run_cli([*common, "--output_dir", str(tmp_path / "whole")])
    assert whole.returncode == 0, whole.stderr[-3000:]
    # 1 call on stand-in completions before the model loads, then 2 per step (policy +
    # reference samples): call 6 is the first of step 3
    killed = _run_cli([*common, "--output_dir", str(tmp_path / "cut")], {"AAPO_KILL_AT_CALL": "6"})
    assert killed.returncode == -9, killed.stderr[-3000:]
    assert (tmp_path / "cut" / "checkpoint-2" / "trainer_state.json").exists()
    assert (tmp_path / "cut" / ".aapo.lock").exists()  # SIGKILL: the lock file stays behind
    resumed = _run_cli([*common, "--output_dir", str(tmp_path / "cut"), "--resume"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "taking over the lock of pid" in resumed.stderr  # the killed run's, named
    assert not (tmp_path / "cut" / ".aapo.lock").exists()
    expected = _strip_times(tmp_path / "whole" / "metrics.jsonl")
    assert [r["step"] for r in expected] == [1, 2, 3, 4]
    assert _strip_times(tmp_path / "cut" / "metrics.jsonl") == expected


def test_cli_unknown_key_exits_with_its_name():
    result = _run_cli(["--num_generatoins", "4"])
    assert result.returncode == 2
    assert (
        "unknown config key 'num_generatoins'" in result.stderr
        and "num_generations" in result.stderr
    )


def test_periodic_held_out_evaluation_is_logged(tmp_path):
    config = _config(tmp_path, max_steps=2, eval_num_problems=6, eval_steps=1, algorithm="grpo")
    summary = Trainer(config).train()
    metrics = [
        json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    ]
    assert [m["step"] for m in metrics] == [0, 1, 2]  # before training, then every step
    for line in metrics:
        assert 0.0 <= line["eval/accuracy"] <= 1.0
        levels = [k for k in line if k.startswith("eval/accuracy/level_")]
        assert levels, line  # the synthetic test split has levels
    assert summary["held_out_accuracy_before"] == metrics[0]["eval/accuracy"]
    assert summary["held_out_accuracy_after"] == metrics[-1]["eval/accuracy"]


def test_final_held_out_check_on_more_problems_than_the_periodic_one(tmp_path):
    config = _config(
        tmp_path, max_steps=2, eval_num_problems=6, eval_steps=1, eval_final_num_problems=15,
        algorithm="grpo",
    )  # fmt: skip
    summary = Trainer(config).train()
    metrics = [
        json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    ]
    periodic = [m for m in metrics if "eval/accuracy" in m]
    final = [m for m in metrics if "eval_final/accuracy" in m]
    assert [m["step"] for m in periodic] == [0, 1, 2]  # the curve on 6 problems, as before
    assert [m["step"] for m in final] == [0, 2]  # before and after, on 15
    for line in final:  # 15 problems, 3 per level: accuracies are multiples of 1/3 per level
        levels = {k: v for k, v in line.items() if k.startswith("eval_final/accuracy/level_")}
        assert len(levels) == 5 and all(round(3 * v, 9) % 1 == 0 for v in levels.values())
        assert line["eval_final/accuracy"] == pytest.approx(sum(levels.values()) / 5)
    assert summary["held_out_accuracy_before"] == final[0]["eval_final/accuracy"]
    assert summary["held_out_accuracy_after"] == final[-1]["eval_final/accuracy"]
    assert summary["held_out_problems"] == 15


def _metrics_without_times(run):
    return _strip_times(run / "metrics.jsonl")


def test_interrupt_during_a_save_then_resume_reproduces_the_run(tmp_path, monkeypatch):
    """Ctrl-C inside the periodic save of step 2: the emergency checkpoint holds the state
    right after step 2, and the resumed run writes the uninterrupted run's metrics and weights."""
    from safetensors.torch import load_file

    from aapo.training import checkpoint

    settings = dict(max_steps=4, save_steps=2, reward_funcs=["format", "accuracy"])
    Trainer(_config(tmp_path / "whole", **settings)).train()

    real_save_file, calls = checkpoint.save_file, {"n": 0}

    def interrupted_once(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 1:  # the first write of the step-2 checkpoint
            raise KeyboardInterrupt
        return real_save_file(*args, **kwargs)

    monkeypatch.setattr(checkpoint, "save_file", interrupted_once)
    with pytest.raises(KeyboardInterrupt):
        Trainer(_config(tmp_path / "cut", **settings)).train()
    monkeypatch.setattr(checkpoint, "save_file", real_save_file)
    cut = tmp_path / "cut" / "run"
    assert (cut / "checkpoint-2" / "trainer_state.json").exists()
    assert not list(cut.glob("*.tmp"))
    Trainer(_config(tmp_path / "cut", **settings, resume_from_checkpoint="latest")).train()

    whole = tmp_path / "whole" / "run"
    assert _metrics_without_times(cut) == _metrics_without_times(whole)
    expected, got = load_file(whole / "model.safetensors"), load_file(cut / "model.safetensors")
    assert all(torch.equal(expected[k], got[k]) for k in expected)


def test_resume_with_changed_settings_is_refused_by_name(tmp_path):
    from aapo.config import ConfigError

    settings = dict(max_steps=2, save_steps=1)
    Trainer(_config(tmp_path, **settings)).train()
    changed = _config(tmp_path, **settings, learning_rate=5e-4, resume_from_checkpoint="latest")
    with pytest.raises(ConfigError, match=r"learning_rate: 0.001 → 0.0005"):
        Trainer(changed).train()
    saved = (tmp_path / "run" / "config.yaml").read_text()
    assert "learning_rate: 0.001" in saved  # never silently rewritten
    allowed = replace(changed, resume_config_changes=True, max_steps=2)
    Trainer(allowed).train()  # an explicit override resumes, with a warning
    assert "learning_rate: 0.001" in (tmp_path / "run" / "config.yaml").read_text()


@pytest.mark.parametrize(
    ("reward", "message"),
    [("[acuracy]", "unknown reward 'acuracy'"), ("[no_such_module:f]", "no_such_module")],
)
def test_bad_reward_exits_before_the_model_loads(reward, message):
    result = _run_cli(["--reward_funcs", reward, "--reward_weights", "null"])
    assert result.returncode == 2, result.stderr[-2000:]
    assert message in result.stderr
    assert "Loading weights" not in result.stderr and "Traceback" not in result.stderr


def test_conversational_dataset_trains_with_trl_reward_conventions(tmp_path):
    seen = {}

    def record(prompts, completions, **kwargs):
        seen.update(prompt=prompts[0], completion=completions[0])
        return [1.0 if "\\boxed{1}" in c[0]["content"] else 0.0 for c in completions]

    data = tmp_path / "chat.jsonl"
    rows = [
        {"prompt": [{"role": "system", "content": "Box it."}, {"role": "user", "content": q}],
         "answer": a}
        for q, a in [("1 + 0?", "1"), ("2 - 1?", "1"), ("0 + 1?", "1"), ("3 - 2?", "1")]
    ]  # fmt: skip
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = _config(tmp_path, dataset_name=str(data), reward_funcs=["format"], max_steps=1)
    summary = Trainer(config, reward_functions={"record": record}).train()
    assert summary["steps"] == 1
    assert seen["prompt"][0] == {"role": "system", "content": "Box it."}
    assert seen["completion"][0]["role"] == "assistant"


def test_bf16_trains_fp32_master_weights_and_saves_bf16(tmp_path):
    """dtype bfloat16: compute under bf16 autocast, the optimizer steps fp32 values (at lr 1e-6
    nearly all of them move, as in fp32; bf16 parameters would round most updates away), and
    the final model is written in bf16."""
    sampler = CraftedSampler(load_tokenizer("bundled"), 4)
    config = _config(
        tmp_path, dtype="bfloat16", learning_rate=1e-6, algorithm="gpg", max_grad_norm=0.0,
        reward_funcs=["rewards_for_tests:boxed_one"],
    )  # fmt: skip
    trainer = Trainer(config, policy_sampler=sampler)
    assert trainer.accelerator.mixed_precision == "bf16"
    params = [p for p in trainer.model.parameters() if p.requires_grad]
    assert all(p.dtype == torch.float32 for p in params)
    before = [p.detach().clone() for p in params]
    trainer.train()
    changed = sum((a != b).sum().item() for a, b in zip(before, params, strict=True))
    assert changed / sum(p.numel() for p in params) >= 0.9
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved.get("dtype", saved.get("torch_dtype")) == "bfloat16"
