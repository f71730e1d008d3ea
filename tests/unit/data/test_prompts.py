"""render_prompt_text is the text of exactly the ids encode_prompt gives the model."""

import copy
import json
import re

import pytest

from aapo.data.prompts import (
    build_messages,
    encode_prompt,
    render_prompt_text,
    resolve_prompt_examples,
)
from aapo.models import load_tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer("bundled")


def test_chat_template_rendering_matches_the_encoded_ids(tokenizer):
    messages = build_messages("What is 3 + 4?", "Be brief.", "{problem}")
    text = render_prompt_text(tokenizer, messages)
    assert text == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nWhat is 3 + 4?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    assert tokenizer.decode(encode_prompt(tokenizer, messages)) == text


def test_without_a_chat_template_the_plain_text_is_rendered(tokenizer):
    plain = copy.deepcopy(tokenizer)
    plain.chat_template = None
    messages = build_messages("What is 3 + 4?", "Be brief.", "Q: {problem}")
    text = render_prompt_text(plain, messages)
    assert text == "Be brief.\n\nQ: What is 3 + 4?\n"
    assert plain.decode(encode_prompt(plain, messages)) == text


def test_worked_examples_sit_between_the_system_turn_and_the_problem():
    shots = resolve_prompt_examples("boxed_arithmetic")
    messages = build_messages("What is 3 + 4?", "Box it.", "{problem}", shots)
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    assert messages[2]["content"] == "2 + 3 = 5. The final answer is \\boxed{5}."
    assert messages[3]["content"] == "What is 3 + 4?"
    assert resolve_prompt_examples(None) == [] and resolve_prompt_examples("none") == []


def test_worked_examples_load_from_a_json_file(tmp_path):
    path = tmp_path / "shots.json"
    exchange = [{"role": "user", "content": "1 + 1?"}, {"role": "assistant", "content": "2"}]
    path.write_text(json.dumps(exchange * 2))
    assert resolve_prompt_examples(str(path)) == exchange * 2


@pytest.mark.parametrize(
    ("messages", "culprit"),
    [
        ([], "non-empty list"),
        ([{"role": "assistant", "content": "2"}], "message 0 has role 'assistant'"),
        ([{"role": "user", "content": "1 + 1?"}], "the last message must be the assistant's"),
        ([{"role": "user", "content": " "}, {"role": "assistant", "content": "2"}], "message 0 "),
        ([{"role": "user", "content": "x", "name": "a"}], "role and content only"),
    ],
)
def test_malformed_worked_examples_name_the_message_at_fault(tmp_path, messages, culprit):
    path = tmp_path / "shots.json"
    path.write_text(json.dumps(messages))
    with pytest.raises(ValueError, match=re.escape(culprit)):
        resolve_prompt_examples(str(path))


def test_an_unknown_examples_name_lists_the_known_ones(tmp_path):
    with pytest.raises(ValueError, match="neither a known name \\(boxed_arithmetic\\)"):
        resolve_prompt_examples("two_shot")
    (tmp_path / "bad.json").write_text("[{")
    with pytest.raises(ValueError, match="is not valid JSON"):
        resolve_prompt_examples(str(tmp_path / "bad.json"))
