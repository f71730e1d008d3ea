"""The paper's prompts (Appendix C), by name, and how a problem becomes model input.

Names: `r1_think` is the 1.5B run's system prompt and `simplerl` the 7B run's, as the paper
prints them (the authors swap the two: docs/ALGORITHMS.md §8.6). `eval_math` is the evaluation
prompt (a user-turn template with `{problem}`), asking for the final answer in `\\boxed{}`.
`encode_prompt` gives the token ids the model sees; `render_prompt_text` the same prompt as text.
Worked examples (`prompt_examples`) are whole user/assistant exchanges shown before the problem:
a small instruct model copies an answer format it has seen far more often than one it is told
(docs/STUDY.md, part 3: SmolLM2 boxes 0-1 answers in 64 when asked, 42-54 after one example).
"""

from __future__ import annotations

import json
import string
from pathlib import Path
from typing import Any

from aapo.messages import shown

SYSTEM_PROMPTS: dict[str, str] = {
    "r1_think": (
        "You are a helpful AI Assistant, designed to provided well-reasoned and detailed "
        "responses. You FIRST think about the reasoning process as an internal monologue and "
        "then provide the user with the answer. The reasoning process MUST BE enclosed within "
        "<think> and </think> tags."
    ),
    "simplerl": (
        "A conversation between User and Assistant. The user asks a question, and the Assistant "
        "solves it. The assistant first thinks about the reasoning process in the mind and then "
        "provides the user with the answer, and put your final answer within \\boxed{} . The "
        "reasoning process and answer are enclosed within <think> </think> and <answer> "
        "</answer> tags, respectively, i.e., <think> reasoning process here </think> <answer> "
        "answer here </answer>. Note that respond by English, NOT use other languages."
    ),
}

USER_TEMPLATES: dict[str, str] = {
    "plain": "{problem}",
    "eval_math": (
        "Solve the following math problem efficiently and clearly.  The last line of your "
        "response should be of the following format: 'Therefore, the final answer is: "
        "$\\boxed{{ANSWER}}$. I hope it is correct' (without quotes) where ANSWER is just the "
        "final number or expression that solves the problem. Think step by step before "
        "answering.\n\n{problem}"
    ),
}


PROMPT_EXAMPLES: dict[str, tuple[dict[str, str], ...]] = {
    # one worked exchange in the synthetic task's wording, ending in the answer rule's box
    "boxed_arithmetic": (
        {"role": "user", "content": "What is 2 + 3?"},
        {"role": "assistant", "content": "2 + 3 = 5. The final answer is \\boxed{5}."},
    ),
}


def resolve_prompt_examples(name_or_path: str | None) -> list[dict[str, str]]:
    """Worked exchanges by registered name, or from a JSON file holding a list of
    {"role", "content"} messages: user and assistant turns alternating, user first and
    assistant last (each example a complete exchange). None or "none" gives none."""
    if name_or_path is None or name_or_path in ("", "none"):
        return []
    if name_or_path in PROMPT_EXAMPLES:
        return [dict(m) for m in PROMPT_EXAMPLES[name_or_path]]
    where = f"prompt_examples {shown(name_or_path)}"
    path = Path(name_or_path)
    if not path.is_file():
        known = ", ".join(sorted(PROMPT_EXAMPLES))
        raise ValueError(f"{where} is neither a known name ({known}) nor an existing JSON file")
    try:
        messages = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{where} is not valid JSON: {err}") from err
    return check_examples(messages, where)


def check_examples(messages: Any, where: str) -> list[dict[str, str]]:
    """The messages as given when they form whole user/assistant exchanges; else a ValueError
    naming the first message at fault."""
    if not isinstance(messages, list) or not messages:
        raise ValueError(f"{where}: expected a non-empty list of messages")
    for i, message in enumerate(messages):
        role = "user" if i % 2 == 0 else "assistant"
        if not isinstance(message, dict) or set(message) != {"role", "content"}:
            raise ValueError(f"{where}: message {i} must be an object with role and content only")
        if message["role"] != role:
            raise ValueError(
                f"{where}: message {i} has role {shown(message['role'])}, expected {role!r} "
                "(user and assistant alternate, user first)"
            )
        if not isinstance(message["content"], str) or not message["content"].strip():
            raise ValueError(f"{where}: message {i} has no text content")
    if len(messages) % 2:
        raise ValueError(f"{where}: the last message must be the assistant's (a whole exchange)")
    return [dict(m) for m in messages]


def resolve_system_prompt(name_or_text: str | None) -> str | None:
    """A registered name gives the paper's prompt; any other string is used as written."""
    if name_or_text is None or name_or_text in ("", "none"):
        return None
    return SYSTEM_PROMPTS.get(name_or_text, name_or_text)


def resolve_user_template(name_or_text: str) -> str:
    """A registered name, or a literal template whose one field is `{problem}` (a literal
    brace is written doubled, `{{` or `}}`, as in `str.format`). Anything else is refused
    here, when the config is built, rather than as a KeyError on the first prompt."""
    template = USER_TEMPLATES.get(name_or_text, name_or_text)
    where = f"prompt template {shown(name_or_text)}"
    braces = "write a literal brace doubled, {{ or }}"
    try:
        fields = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    except ValueError as err:  # a stray `{` or `}`
        raise ValueError(f"{where} is not a valid template: {err} ({braces})") from err
    if "problem" not in fields:
        known = ", ".join(sorted(USER_TEMPLATES))
        raise ValueError(
            f"{where} is neither a known name ({known}) nor a template containing '{{problem}}'"
        )
    others = sorted({name for name in fields if name != "problem"})
    if others:
        listed = ", ".join("{" + name + "}" for name in others)
        raise ValueError(f"{where} uses {listed}; its only field is {{problem}} ({braces})")
    try:  # what parsing alone misses: a field nested in a format spec, a bad spec
        template.format(problem="")
    except (KeyError, IndexError, ValueError, AttributeError) as err:
        raise ValueError(f"{where} cannot be filled in: {type(err).__name__}: {err}") from err
    return template


def build_messages(
    problem: str,
    system_prompt: str | None,
    user_template: str,
    examples: list[dict[str, str]] | None = None,
) -> list[dict]:
    """Chat messages for one problem: the system turn when a system prompt is set, the worked
    examples, then the problem's user turn."""
    messages = [] if system_prompt is None else [{"role": "system", "content": system_prompt}]
    messages += [dict(m) for m in examples or ()]
    messages.append({"role": "user", "content": user_template.format(problem=problem)})
    return messages


def plain_prompt_text(messages: list[dict]) -> str:
    """The prompt of a tokenizer without a chat template: the turns' texts, blank-line joined."""
    return "\n\n".join(m["content"] for m in messages) + "\n"


def render_prompt_text(tokenizer: Any, messages: list[dict]) -> str:
    """The prompt exactly as `encode_prompt` gives it to the model, as text: the chat template
    with its generation prompt (e.g. R1-Distill's trailing `<think>\n`), or the plain text.
    Rewards read it (the `rendered_prompt` column) to see what the completion continues."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return plain_prompt_text(messages)


def encode_prompt(tokenizer: Any, messages: list[dict]) -> list[int]:
    """Token ids of the prompt: the chat template when the tokenizer has one, else plain text."""
    if getattr(tokenizer, "chat_template", None):
        ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        if isinstance(ids, dict) or hasattr(
            ids, "input_ids"
        ):  # transformers 5 returns BatchEncoding
            ids = ids["input_ids"]
        return list(ids)
    return tokenizer(plain_prompt_text(messages), add_special_tokens=True)["input_ids"]
