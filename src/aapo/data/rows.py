"""Training prompts as typed rows, and the order in which steps meet them.

A `PromptRow` is one dataset row made ready for sampling: its problem rendered through the
system prompt and user template (and the chat template, when the tokenizer has one) into token
ids, beside the dataset columns that reward functions receive as keyword arguments. The data
order is a seeded permutation per epoch, so the step number alone fixes which rows a step sees
and a resumed run meets the same batches.

Left out: loading and validating datasets (datasets.py) and the prompt texts (prompts.py).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch

from aapo.config import ConfigError
from aapo.data.prompts import (
    build_messages,
    encode_prompt,
    render_prompt_text,
    resolve_prompt_examples,
    resolve_system_prompt,
    resolve_user_template,
)

log = logging.getLogger("aapo")


@dataclass(frozen=True)
class PromptRow:
    """One training prompt."""

    index: int  # position in the prepared dataset: a stable identity for the run's data
    prompt_ids: list[int]  # what the model is prompted with
    columns: dict[str, Any]  # the dataset row (problem, answer or solution, any extra column)
    source: str  # where the row came from (`file:line`), for messages
    rendered_prompt: str = ""  # the prompt as the model sees it, chat template applied
    epoch: int = 0  # the epoch it was drawn in: which reference-cache draw it is served

    @property
    def problem(self) -> str:
        return self.columns["problem"]

    @property
    def conversational(self) -> bool:
        """TRL's conversational form: `prompt` is the list of chat messages to send."""
        return isinstance(self.columns.get("prompt"), list)


def prepare_rows(
    rows: list[dict],
    tokenizer: Any,
    system_prompt: str | None,
    template: str,
    max_length: int,
    examples: str | None = None,
) -> tuple[list[PromptRow], int]:
    """Encode every row's prompt; drop (and count) prompts longer than `max_length` tokens.
    `examples`: a `prompt_examples` name or file, shown before each problem."""
    system = resolve_system_prompt(system_prompt)
    user_template = resolve_user_template(template)
    shots = resolve_prompt_examples(examples)
    kept: list[PromptRow] = []
    skipped = 0
    shortest = None  # of the skipped prompts, in tokens
    for position, row in enumerate(rows):
        messages = _messages(row, system, user_template, shots)
        ids = encode_prompt(tokenizer, messages)
        if len(ids) > max_length:
            skipped += 1
            shortest = len(ids) if shortest is None else min(shortest, len(ids))
            continue
        columns = {k: v for k, v in row.items() if not k.startswith("_")}
        source = str(row.get("_source", f"row {position}"))
        rendered = render_prompt_text(tokenizer, messages)
        kept.append(PromptRow(len(kept), ids, columns, source, rendered))
    if skipped:
        log.warning(
            "skipped %d prompts longer than max_prompt_length=%d tokens", skipped, max_length
        )
    if not kept:
        raise ConfigError(
            f"every prompt is longer than max_prompt_length={max_length} tokens (the shortest "
            f"has {shortest}, system prompt and template included): raise max_prompt_length "
            f"to at least {shortest}"
        )
    return kept, skipped


def _messages(row: dict, system: str | None, user_template: str, shots: list[dict]) -> list[dict]:
    """A conversational row's own messages (a configured system prompt opens them when they
    have no system turn; the worked examples follow its system turns), else the problem
    through the system prompt, examples and user template."""
    prompt = row.get("prompt")
    if not isinstance(prompt, list):
        return build_messages(row["problem"], system, user_template, shots)
    if system is not None and not any(m["role"] == "system" for m in prompt):
        prompt = [{"role": "system", "content": system}, *prompt]
    opening = next((i for i, m in enumerate(prompt) if m["role"] != "system"), len(prompt))
    return [*prompt[:opening], *shots, *prompt[opening:]]


def epoch_order(num_rows: int, seed: int, epoch: int) -> list[int]:
    """The row order of one epoch: a permutation seeded by (seed, epoch) alone."""
    generator = torch.Generator().manual_seed(seed * 1000 + epoch)
    return torch.randperm(num_rows, generator=generator).tolist()
