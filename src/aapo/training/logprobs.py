"""Per-token log-probabilities of completions under a causal LM, in one forward pass.

Prompts are left-padded and completions right-padded, so every completion starts at the same
column and the model only has to produce logits for the last T+1 positions. Position ids are
derived from the attention mask, as `generate` does for left-padded batches, so the numbers
match the distribution the completions were sampled from.
"""

from __future__ import annotations

from typing import Any

import torch


def pack(
    prompts: list[list[int]], completions: list[list[int]], pad_id: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """→ input_ids [n, P+T], attention_mask [n, P+T], completion_mask [n, T] (float)."""
    if len(prompts) != len(completions):
        raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
    width_p = max(len(p) for p in prompts)
    width_c = max(1, max(len(c) for c in completions))
    n = len(prompts)
    input_ids = torch.full((n, width_p + width_c), pad_id, dtype=torch.long)
    attention = torch.zeros((n, width_p + width_c), dtype=torch.long)
    completion_mask = torch.zeros((n, width_c), dtype=torch.float32)
    for row, (prompt, completion) in enumerate(zip(prompts, completions, strict=True)):
        input_ids[row, width_p - len(prompt) : width_p] = torch.tensor(prompt, dtype=torch.long)
        attention[row, width_p - len(prompt) : width_p] = 1
        if completion:
            end = width_p + len(completion)
            input_ids[row, width_p:end] = torch.tensor(completion, dtype=torch.long)
            attention[row, width_p:end] = 1
            completion_mask[row, : len(completion)] = 1.0
    return input_ids, attention, completion_mask


def completion_logprobs(
    model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, num_completion_tokens: int
) -> torch.Tensor:
    """log π(o_t | q, o_<t) for the last `num_completion_tokens` columns → [n, T] (float32)."""
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    logits = model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids,
        logits_to_keep=num_completion_tokens + 1,
        use_cache=False,
    ).logits[:, :-1]  # [n, T, V]: the logits at column j predict token j + 1
    targets = input_ids[:, -num_completion_tokens:]
    logits = logits.float()
    # gather - logsumexp avoids materialising a full [n, T, V] log-softmax copy
    picked = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return picked - torch.logsumexp(logits, dim=-1)
