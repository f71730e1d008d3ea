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


# The chat template of deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B (the 1.5B recipe's model), as
# its tokenizer_config.json ships it: the generation prompt ends with `<｜Assistant｜><think>\n`,
# so every completion starts inside the think block.
R1_DISTILL_QWEN_TEMPLATE = (
    "{% if not add_generation_prompt is defined %}{% set add_generation_prompt = false %}"
    "{% endif %}{% set ns = namespace(is_first=false, is_tool=false, is_output_first=true, "
    "system_prompt='') %}{%- for message in messages %}{%- if message['role'] == 'system' %}"
    "{% set ns.system_prompt = message['content'] %}{%- endif %}{%- endfor %}{{bos_token}}"
    "{{ns.system_prompt}}{%- for message in messages %}{%- if message['role'] == 'user' %}"
    "{%- set ns.is_tool = false -%}{{'<｜User｜>' + message['content']}}{%- endif %}"
    "{%- if message['role'] == 'assistant' and message['content'] is none %}"
    "{%- set ns.is_tool = false -%}{%- for tool in message['tool_calls']%}"
    "{%- if not ns.is_first %}{{'<｜Assistant｜><｜tool▁calls▁begin｜><｜tool▁call▁begin｜>' + "
    "tool['type'] + '<｜tool▁sep｜>' + tool['function']['name'] + '\\n' + '```json' + '\\n' + "
    "tool['function']['arguments'] + '\\n' + '```' + '<｜tool▁call▁end｜>'}}"
    "{%- set ns.is_first = true -%}{%- else %}{{'\\n' + '<｜tool▁call▁begin｜>' + tool['type'] + "
    "'<｜tool▁sep｜>' + tool['function']['name'] + '\\n' + '```json' + '\\n' + "
    "tool['function']['arguments'] + '\\n' + '```' + '<｜tool▁call▁end｜>'}}"
    "{{'<｜tool▁calls▁end｜><｜end▁of▁sentence｜>'}}{%- endif %}{%- endfor %}{%- endif %}"
    "{%- if message['role'] == 'assistant' and message['content'] is not none %}"
    "{%- if ns.is_tool %}{{'<｜tool▁outputs▁end｜>' + message['content'] + "
    "'<｜end▁of▁sentence｜>'}}{%- set ns.is_tool = false -%}{%- else %}"
    "{% set content = message['content'] %}{% if '</think>' in content %}"
    "{% set content = content.split('</think>')[-1] %}{% endif %}"
    "{{'<｜Assistant｜>' + content + '<｜end▁of▁sentence｜>'}}{%- endif %}{%- endif %}"
    "{%- if message['role'] == 'tool' %}{%- set ns.is_tool = true -%}"
    "{%- if ns.is_output_first %}{{'<｜tool▁outputs▁begin｜><｜tool▁output▁begin｜>' + "
    "message['content'] + '<｜tool▁output▁end｜>'}}{%- set ns.is_output_first = false %}"
    "{%- else %}{{'\\n<｜tool▁output▁begin｜>' + message['content'] + '<｜tool▁output▁end｜>'}}"
    "{%- endif %}{%- endif %}{%- endfor -%}{% if ns.is_tool %}{{'<｜tool▁outputs▁end｜>'}}"
    "{% endif %}{% if add_generation_prompt and not ns.is_tool %}{{'<｜Assistant｜><think>\\n'}}"
    "{% endif %}"
)


def test_r1_distill_template_opens_think_and_a_correct_completion_scores_one() -> None:
    from aapo.data.prompts import (
        build_messages,
        encode_prompt,
        render_prompt_text,
        resolve_system_prompt,
    )
    from aapo.models import load_tokenizer

    tokenizer = load_tokenizer("bundled")
    tokenizer.chat_template = R1_DISTILL_QWEN_TEMPLATE
    problem = "What is 2 + 2?"
    messages = build_messages(problem, resolve_system_prompt("simplerl"), "{problem}")
    rendered = render_prompt_text(tokenizer, messages)
    assert rendered.startswith("A conversation between User and Assistant.")
    assert rendered.endswith("<｜User｜>What is 2 + 2?<｜Assistant｜><think>\n")
    assert tokenizer.decode(encode_prompt(tokenizer, messages)) == rendered  # what the model saw

    completion = "2 plus 2 makes 4. </think> <answer>4</answer>"
    fmt = get_reward_function("format")
    assert fmt(prompts=[problem], completions=[completion], rendered_prompt=[rendered]) == [1.0]
    # the raw problem alone does not show the opened block: what training used to pass
    assert fmt(prompts=[problem], completions=[completion]) == [0.0]
    # a completion that opens <think> again under this template repeats the tag
    again = "<think> 2 plus 2 makes 4. </think> <answer>4</answer>"
    assert fmt(prompts=[problem], completions=[again], rendered_prompt=[rendered]) == [0.0]


def test_rendered_prompt_without_think_leaves_the_rule_unchanged() -> None:
    fmt = get_reward_function("format")
    rendered = ["<|im_start|>user\nq<|im_end|>\n<|im_start|>assistant\n"]
    assert fmt(prompts=["q"], completions=[GOOD[0]], rendered_prompt=rendered) == [1.0]
    inside = "r</think><answer>1</answer>"
    assert fmt(prompts=["q"], completions=[inside], rendered_prompt=rendered) == [0.0]
