"""Answer extraction: last \\boxed{} by brace matching, else <answer>; completion text."""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aapo.rewards.answers import (
    MAX_BOXED_CHARS,
    answer_tag_content,
    completion_text,
    extract_answer,
    gold_text,
    last_boxed,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("so \\boxed{5}.", "5"),
        ("\\boxed{1} then \\boxed{2}", "2"),  # the last box is the answer
        ("\\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),  # nested braces
        ("\\boxed{\\{1, 2\\}}", "\\{1, 2\\}"),  # escaped braces do not count
        ("\\boxed {7}", "7"),
        ("\\boxed 7 and more", "7"),  # TeX's one-token argument
        ("\\fbox{3}", "3"),
        ("\\boxed{\\boxed{4}}", "4"),
        ("\\boxed{1} and finally \\boxed{2", None),  # last box unclosed: no boxed answer
        ("\\boxedsomething{3}", None),
        ("no box here", None),
        ("\\boxed{" + "1" * (MAX_BOXED_CHARS + 10) + "}", None),  # too long to be an answer
    ],
)
def test_last_boxed(text: str, expected: str | None) -> None:
    assert last_boxed(text) == expected


def test_answer_tag_is_used_only_without_a_box() -> None:
    assert extract_answer("<answer> 12 </answer>").text == "12"
    assert extract_answer("<answer> 12 </answer>").source == "answer_tag"
    boxed = extract_answer("<answer> The answer is \\boxed{3}. </answer>")
    assert (boxed.text, boxed.source) == ("3", "boxed")
    # a truncated last box falls back to the <answer> content
    assert extract_answer("<answer>7</answer> wait, \\boxed{8").text == "7"
    assert answer_tag_content("<answer>1</answer><answer>2</answer>") == "2"
    assert answer_tag_content("<answer> unclosed") is None


@pytest.mark.parametrize("text", ["", "   ", "<answer>  </answer>", "\\boxed{}", "\\boxed{ }"])
def test_empty_answers_are_missing(text: str) -> None:
    assert extract_answer(text) is None


def test_completion_text_from_messages() -> None:
    assert completion_text("plain") == "plain"
    assert completion_text(None) == ""
    assert completion_text([{"role": "assistant", "content": "hi"}]) == "hi"
    messages = [
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": "first"},
        {"role": "tool", "content": "x"},
        {
            "role": "assistant",
            "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
        },
    ]
    assert completion_text(messages) == "ab"
    assert completion_text({"role": "assistant", "content": "one"}) == "one"
    with pytest.raises(TypeError):
        completion_text(42)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("\\frac{1}{2}", "\\frac{1}{2}"),
        ("  7 ", "7"),
        ("$5$", "5"),
        ("$1$ and $2$", "$1$ and $2$"),  # not one wrapped expression
        ("We find ... so $\\boxed{42}$.", "42"),  # a `solution` column: its last box
        ("", None),
        (None, None),
        (3, "3"),
    ],
)
def test_gold_text(raw: object, expected: str | None) -> None:
    assert gold_text(raw) == expected


def test_extraction_is_fast_on_huge_inputs() -> None:
    huge = "x" * 5_000_000
    nested = "\\boxed{" + "{" * 100_000 + "1" + "}" * 100_000 + "}"
    started = time.perf_counter()
    assert extract_answer(huge) is None
    assert extract_answer(huge + "\\boxed{1}").text == "1"
    assert extract_answer(nested) is None  # longer than any answer: not graded
    assert extract_answer("\\boxed{" * 100_000) is None
    assert time.perf_counter() - started < 2.0


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("\\boxed{}<answer>/ 12x$")), max_size=200))
def test_extraction_never_fails_on_arbitrary_text(text: str) -> None:
    found = extract_answer(text)
    assert found is None or (found.text and found.source in ("boxed", "answer_tag"))


@given(st.from_regex(r"[0-9a-z+\-^ ]{1,20}(\{[0-9a-z+ ]{0,10}\}){0,3}", fullmatch=True))
def test_boxed_content_round_trips(content: str) -> None:
    assert last_boxed(f"text \\boxed{{{content}}} more text") == content
