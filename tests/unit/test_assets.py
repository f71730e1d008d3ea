"""The bundled tiny model loads offline with plain transformers calls and writes the format."""

from __future__ import annotations

import json
import os
import re

import pytest

# Before transformers is imported (the hub reads it once): nothing may come from a hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
import transformers

from aapo.assets import TINY_MODEL_DIR
from aapo.data.synthetic import generate_structured

FORMAT = re.compile(r"^\s*<think>.*?</think>\s*<answer>.*?\\boxed\{\d+\}.*?</answer>\s*$", re.S)


@pytest.fixture(scope="module")
def tokenizer():
    return transformers.AutoTokenizer.from_pretrained(TINY_MODEL_DIR)


@pytest.fixture(scope="module")
def model():
    return transformers.AutoModelForCausalLM.from_pretrained(TINY_MODEL_DIR, dtype=torch.float32)


def _prompt(tokenizer, messages: list[dict]) -> list[int]:
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    return list(ids["input_ids"] if hasattr(ids, "keys") else ids)


def test_files_are_small_and_readable() -> None:
    files = {p.name: p for p in TINY_MODEL_DIR.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "build_report.json"} <= set(files)
    assert sum(p.stat().st_size for p in files.values()) < 20 * 2**20
    assert all(p.stat().st_mode & 0o444 == 0o444 for p in files.values())


def test_tokenizer_has_pad_eos_and_chat_template(tokenizer) -> None:
    assert tokenizer.pad_token_id is not None and tokenizer.eos_token_id is not None
    assert tokenizer.pad_token_id != tokenizer.eos_token_id
    assert tokenizer.chat_template
    user = [{"role": "user", "content": "What is 3 + 4?"}]
    text = tokenizer.apply_chat_template(user, add_generation_prompt=True, tokenize=False)
    assert "What is 3 + 4?" in text and text.endswith("assistant\n")
    with_system = [{"role": "system", "content": "Think first."}, *user]
    assert len(_prompt(tokenizer, with_system)) > len(_prompt(tokenizer, user))


def test_formatted_solution_round_trips(tokenizer) -> None:
    solution = "<think> 37+48=85, 85*2=170 </think> <answer> \\boxed{170} </answer>"
    ids = tokenizer(solution, add_special_tokens=False)["input_ids"]
    assert tokenizer.decode([*ids, tokenizer.eos_token_id], skip_special_tokens=True) == solution
    assert len(ids) < 40  # tags are whole tokens, digits single tokens
    digits = tokenizer("12345", add_special_tokens=False)["input_ids"]
    assert len(digits) == 5


def test_config_is_a_standard_architecture(model) -> None:
    assert model.config.model_type in {"qwen2", "llama"}
    assert sum(p.numel() for p in model.parameters()) < 5_000_000


def test_greedy_generation_follows_the_format(model, tokenizer) -> None:
    problems = generate_structured(4, seed=0, levels=(1,), split="test")
    prompts = [_prompt(tokenizer, [{"role": "user", "content": p.text}]) for p in problems]
    width = max(len(p) for p in prompts)
    ids = torch.tensor([[tokenizer.pad_token_id] * (width - len(p)) + p for p in prompts])
    mask = (torch.arange(width) >= torch.tensor([width - len(p) for p in prompts])[:, None]).long()
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=48)
    texts = tokenizer.batch_decode(out[:, width:], skip_special_tokens=True)
    assert all(FORMAT.match(t) for t in texts), texts
    # The build report says level 1 is mostly right; four problems should show at least one.
    assert any(f"\\boxed{{{p.answer}}}" in t for p, t in zip(problems, texts, strict=True)), texts
    assert all(tokenizer.eos_token_id in row.tolist() for row in out[:, width:])


def test_build_report_shows_the_habit_and_the_headroom() -> None:
    report = json.loads((TINY_MODEL_DIR / "build_report.json").read_text())
    greedy = report["test"]["greedy"]["by_level"]
    sampled = report["test"]["sampled_t1"]["by_level"]
    assert set(greedy) == set(sampled) == {"1", "2", "3", "4", "5"}
    assert all(level["format"] >= 0.95 for level in sampled.values())
    # The habit: where dropping a carry or borrow changes the answer, greedy mostly drops it...
    assert greedy["1"]["slipped"] >= 0.5 and greedy["2"]["slipped"] >= 0.5
    # ...while sampling still finds right answers: the headroom the default run recovers.
    assert sampled["1"]["accuracy"] >= 0.4 and sampled["5"]["groups_all_wrong"] >= 0.8
    middle = sampled["3"]  # the regime AAPO is about: tied groups at both ends, mixed between
    assert 1 - middle["groups_all_right"] - middle["groups_all_wrong"] >= 0.4
