"""render_prompt_text is the text of exactly the ids encode_prompt gives the model."""

import copy

import pytest

from aapo.data.prompts import build_messages, encode_prompt, render_prompt_text
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
