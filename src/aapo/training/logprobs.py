"""Per-token log-probabilities of completions under a causal LM, in one forward pass.

Prompts are left-padded and completions right-padded, so every completion starts at the same
column and the model only has to produce logits for the last T+1 positions. Position ids are
derived from the attention mask, as `generate` does for left-padded batches, so the numbers
match the distribution the completions were sampled from.

Temperature (ALGORITHMS.md §6): the log-probabilities are of softmax(logits / T), T the sampling
temperature, so every loss term (NLL, ratio, KL) is taken under the distribution that was
sampled. The log-softmax runs block by block over rows and positions inside a custom autograd
function that recomputes its softmax in the backward pass: no [n, T, V] float32 copy of the
logits (scaled, upcast or log-softmaxed) is ever held, only the model's own logits and one
block at a time. The values are those of `log_softmax(logits / T)` gathered at the targets.

Left out: fusing the LM head into the blocks (the model's logits are still materialised).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch

# elements of one float32 block of [rows, positions, V] logits (64 MiB)
BLOCK_ELEMENTS = 1 << 24


def pack(
    prompts: list[list[int]], completions: list[list[int]], pad_id: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """→ input_ids [n, P+T], attention_mask [n, P+T], completion_mask [n, T] (float).

    Completions are taken as given, EOS included when they end with one (`Sample`).
    """
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
    model: Any,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    num_completion_tokens: int,
    temperature: float = 1.0,
) -> torch.Tensor:
    """log softmax(logits / T)[o_t] for the last `num_completion_tokens` columns → [n, T] (fp32).

    temperature: the sampling temperature; 0 (greedy sampling) is scored at T = 1, the
    distribution greedy decoding takes the argmax of.
    """
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    logits = model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids,
        logits_to_keep=num_completion_tokens + 1,
        use_cache=False,
    ).logits  # [n, T+1, V]: the logits at column j predict token j + 1
    targets = input_ids[:, -num_completion_tokens:]  # [n, T]
    return tempered_token_logprobs(logits, targets, temperature or 1.0)


def tempered_token_logprobs(
    logits: torch.Tensor, targets: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """log_softmax(logits[:, :T] / temperature) gathered at `targets` [n, T] → [n, T] float32.

    `logits` is [n, ≥T, V]; only its first T positions are read. Computed block by block
    (see the module docstring); differentiable with respect to `logits`.
    """
    if targets.ndim != 2 or logits.ndim != 3 or logits.shape[1] < targets.shape[1]:
        raise ValueError(
            f"need logits [n, >=T, V] and targets [n, T]; got {tuple(logits.shape)} and "
            f"{tuple(targets.shape)}"
        )
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    return _TemperedLogprob.apply(logits, targets, float(temperature))


def _blocks(rows: int, positions: int, vocab: int) -> Iterator[tuple[slice, slice]]:
    """(row slice, position slice) blocks of at most BLOCK_ELEMENTS logits each."""
    per_row = positions * vocab
    if per_row <= BLOCK_ELEMENTS:
        step = max(1, BLOCK_ELEMENTS // max(per_row, 1))
        for r in range(0, rows, step):
            yield slice(r, r + step), slice(0, positions)
        return
    width = max(1, BLOCK_ELEMENTS // vocab)
    for r in range(rows):
        for t in range(0, positions, width):
            yield slice(r, r + 1), slice(t, min(t + width, positions))


class _TemperedLogprob(torch.autograd.Function):
    """y = x[target] / T − logsumexp(x / T); ∂y/∂x_v = (1[v = target] − softmax(x / T)_v) / T.

    Saves the logits and the [n, T] logsumexp only; the backward pass recomputes the softmax
    one block at a time.
    """

    @staticmethod
    def forward(ctx: Any, logits: torch.Tensor, targets: torch.Tensor, temperature: float):
        n, T = targets.shape
        out = torch.empty((n, T), dtype=torch.float32, device=logits.device)
        lse = torch.empty_like(out)
        for rows, cols in _blocks(n, T, logits.shape[-1]):
            block = logits[rows, cols].float() / temperature  # [r, t, V]
            lse[rows, cols] = torch.logsumexp(block, dim=-1)
            picked = block.gather(-1, targets[rows, cols].unsqueeze(-1)).squeeze(-1)
            out[rows, cols] = picked - lse[rows, cols]
        ctx.save_for_backward(logits, targets, lse)
        ctx.temperature = temperature
        return out

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor):
        logits, targets, lse = ctx.saved_tensors
        temperature = ctx.temperature
        grad = torch.zeros_like(logits)  # positions past T get no gradient
        n, T = targets.shape
        for rows, cols in _blocks(n, T, logits.shape[-1]):
            block = logits[rows, cols].float() / temperature
            g = grad_out[rows, cols].float().unsqueeze(-1)  # [r, t, 1]
            block_grad = -(block - lse[rows, cols].unsqueeze(-1)).exp() * g  # −softmax · g
            block_grad.scatter_add_(-1, targets[rows, cols].unsqueeze(-1), g)
            grad[rows, cols] = (block_grad / temperature).to(grad.dtype)
        return grad, None, None


def adapter_disabled_logprobs(
    peft_model: Any,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    num_completion_tokens: int,
    temperature: float = 1.0,
) -> torch.Tensor:
    """Reference log-probs of a LoRA policy: its base weights with the adapters disabled.

    With LoRA the frozen reference is the base model itself, so the KL term must read it
    this way; using no reference at all would silently drop the KL. No gradient.
    """
    if not hasattr(peft_model, "disable_adapter"):
        raise TypeError("adapter_disabled_logprobs needs a peft model (with disable_adapter())")
    with torch.no_grad(), peft_model.disable_adapter():
        return completion_logprobs(
            peft_model, input_ids, attention_mask, num_completion_tokens, temperature
        )
