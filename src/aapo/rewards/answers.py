"""Finding the final answer in a completion, and the text of a completion.

The rule (docs/ALGORITHMS.md §7.2; the protocol rule "the last `\\boxed{}` is the answer"):

1. The answer is the content of the *last* `\\boxed{...}` (or `\\fbox{...}`) in the completion,
   found by brace matching (`\\{` and `\\}` are literal braces and do not count). If that last
   box is never closed (a truncated completion), there is no boxed answer: an earlier box
   is not used, because the model had moved past it.
2. Otherwise the answer is the content of the last closed `<answer> ... </answer>` pair.
3. Otherwise there is no answer.

Opt-in fallback (`answer_with_fallback(text, "last_number")`, off by default so the paper's rule
is unchanged): a completion with neither a box nor an `<answer>` tag is answered by its last
plain number (`9 + 7 = 16` → `16`), for instruct models that answer arithmetic without either.

Everything here is plain string scanning, linear in the input and bounded by `max_chars`, so
it is safe to run on untrusted text in the calling process. Parsing the answer as mathematics
happens in the grading workers (`grading_worker.py`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

from aapo.messages import shown

BOX_COMMANDS = ("\\boxed", "\\fbox")
# No gold in the five benchmarks is longer than a few hundred characters; a longer "answer"
# would only spend the grading timeout.
MAX_BOXED_CHARS = 2000
# `<answer>` may hold prose; the grader reads its last part, where the final answer sits.
MAX_ANSWER_TAG_CHARS = 4000
FALLBACKS = ("last_number",)
# an integer or decimal, thousands commas allowed; a minus sign only where it cannot be the
# operator of a preceding term (`5-3` ends in 3, `= -3` in -3)
_NUMBER = re.compile(r"(?:(?<![\w)\]}])-)?\d+(?:,\d{3})*(?:\.\d+)?")


@dataclass(frozen=True)
class ExtractedAnswer:
    """The answer text and where it came from: `boxed` content or `<answer>` tag content."""

    text: str
    source: Literal["boxed", "answer_tag"]


def completion_text(completion: Any) -> str:
    """The text of a completion given as a string, a chat message, or a list of messages.

    For a list of messages this is the content of the last assistant message (the last
    message if none has a role); content given as parts (`[{"type": "text", "text": ...}]`)
    is joined. `None` becomes "".
    """
    if completion is None:
        return ""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        return _content_text(completion.get("content"))
    if isinstance(completion, (list, tuple)):
        messages = [m for m in completion if isinstance(m, dict)]
        if not messages:
            return ""
        assistant = [m for m in messages if m.get("role") == "assistant"]
        return _content_text((assistant or messages)[-1].get("content"))
    raise TypeError(f"a completion must be a string or chat messages, not {type(completion)}")


def _content_text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, (list, tuple)):
        parts = [p.get("text", "") for p in content if isinstance(p, dict)]
        return "".join(p for p in parts if isinstance(p, str))
    return str(content)


def _last_box_start(text: str) -> tuple[int, int] | None:
    """(index of the last box command, index just after its name), or None."""
    best: tuple[int, int] | None = None
    for command in BOX_COMMANDS:
        start = text.rfind(command)
        while start != -1:
            after = start + len(command)
            # `\boxedfoo` is another command: require a non-letter after the name.
            if after >= len(text) or not text[after].isalpha():
                if best is None or start > best[0]:
                    best = (start, after)
                break
            start = text.rfind(command, 0, start)
    return best


def last_boxed(text: str, max_chars: int = MAX_BOXED_CHARS) -> str | None:
    """The content of the last `\\boxed{...}`; None when absent, unclosed or too long."""
    found = _last_box_start(text)
    if found is None:
        return None
    pos = found[1]
    while pos < len(text) and text[pos] in " \t":
        pos += 1
    if pos >= len(text):
        return None
    if text[pos] != "{":
        # `\boxed 5`: TeX takes one token as the argument.
        end = pos
        while end < len(text) and end - pos < max_chars and not text[end].isspace():
            if text[end] in "$}":
                break
            end += 1
        return text[pos:end] or None
    depth, i, limit = 0, pos, min(len(text), pos + max_chars + 2)
    while i < limit:
        char = text[i]
        if char == "\\":
            i += 2  # skip the escaped character: `\{`, `\}`, `\\`
            continue
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return text[pos + 1 : i]
        i += 1
    return None


def answer_tag_content(text: str, max_chars: int = MAX_ANSWER_TAG_CHARS) -> str | None:
    """The content of the last closed `<answer>...</answer>` (its last `max_chars` chars)."""
    end = text.rfind("</answer>")
    if end == -1:
        return None
    start = text.rfind("<answer>", 0, end)
    if start == -1:
        return None
    content = text[start + len("<answer>") : end]
    return content[-max_chars:]


def extract_answer(completion: Any) -> ExtractedAnswer | None:
    """The final answer of a completion by the rule in the module docstring, or None."""
    text = completion_text(completion)
    boxed = last_boxed(text)
    if boxed is not None and boxed.strip():
        return ExtractedAnswer(boxed.strip(), "boxed")
    tagged = answer_tag_content(text)
    if tagged is not None and tagged.strip():
        return ExtractedAnswer(tagged.strip(), "answer_tag")
    return None


def gold_text(raw: Any) -> str | None:
    """A gold answer as a bare string: the last `\\boxed{}` of a solution text when there is
    one (TRL / open-r1 `solution` columns), without surrounding `$...$`; None when empty."""
    if raw is None:
        return None
    text = str(raw).strip()
    if _last_box_start(text) is not None:
        boxed = last_boxed(text, max_chars=len(text))
        if boxed is not None:
            text = boxed.strip()
    for left, right in (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
        inner = text[len(left) : -len(right)]
        # `$1$ and $2$` is not one wrapped expression: only strip when nothing else is wrapped.
        if text.startswith(left) and text.endswith(right) and left not in inner and inner.strip():
            text = inner.strip()
            break
    return text or None


def last_number(text: str) -> str | None:
    """The last plain number in `text` (thousands commas removed), or None."""
    numbers = _NUMBER.findall(text)
    return numbers[-1].replace(",", "") if numbers else None


def answer_with_fallback(text: str, fallback: str | None) -> str:
    """`text`, or when it has no answer by the rule and `fallback` is `last_number`, its last
    number boxed, so the grader reads that number as the answer."""
    if fallback is None:
        return text
    if fallback not in FALLBACKS:
        raise ValueError(
            f"answer fallback must be None or one of {FALLBACKS}, got {shown(fallback)}"
        )
    if extract_answer(text) is not None:
        return text
    number = last_number(text)
    return text if number is None else f"{text}\n\\boxed{{{number}}}"
