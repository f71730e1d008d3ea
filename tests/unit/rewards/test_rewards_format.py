"""The format reward: the exact template rule documented in FormatReward."""

from __future__ import annotations

import pytest

from aapo.rewards import get_reward_function

GOOD = [
    "<think>reasoning</think><answer>42</answer>",
    "<think>\nreasoning\n</think>\n<answer>\n42\n</answer>",
    "  <think> a </think>   <answer> \\boxed{1} </answer>  \n",
    "<think></think><answer>x</answer>",  # an empty think block is allowed
]
BAD = [
    "",
    "42",
    "<think>reasoning</think>",  # no answer block
    "<answer>42</answer>",  # no think block
    "<answer>42</answer><think>r</think>",  # wrong order
    "<think>r</think><answer>   </answer>",  # empty answer
    "<think>r</think><answer>42</answer> trailing text",
    "preamble <think>r</think><answer>42</answer>",
    "<think>r</think> between <answer>42</answer>",
    "<think>r</think><answer>42",  # unclosed
    "<think>a<think>b</think><answer>1</answer>",  # repeated tag
    "<think>r</think><answer>1</answer><answer>2</answer>",
    "<THINK>r</THINK><ANSWER>1</ANSWER>",  # tags are case-sensitive
]


@pytest.mark.parametrize("text", GOOD)
def test_follows_template(text: str) -> None:
    assert get_reward_function("format")(prompts=["q"], completions=[text]) == [1.0]


@pytest.mark.parametrize("text", BAD)
def test_breaks_template(text: str) -> None:
    assert get_reward_function("format")(prompts=["q"], completions=[text]) == [0.0]


def test_chat_messages_and_batches() -> None:
    fmt = get_reward_function("format")
    completions = [
        [{"role": "assistant", "content": GOOD[0]}],
        [{"role": "assistant", "content": BAD[1]}],
    ]
    assert fmt(prompts=[[{"role": "user", "content": "q"}]] * 2, completions=completions) == [
        1.0,
        0.0,
    ]


def test_think_opened_by_the_prompt() -> None:
    completion = "reasoning</think><answer>7</answer>"
    fmt = get_reward_function("format")
    assert fmt(prompts=["<|Assistant|><think>\n"], completions=[completion]) == [1.0]
    assert fmt(prompts=["plain prompt"], completions=[completion]) == [0.0]
    forced = get_reward_function("format", think_in_prompt=True)
    assert forced(prompts=[[{"role": "user", "content": "q"}]], completions=[completion]) == [1.0]
