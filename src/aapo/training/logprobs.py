"""Per-token log-probabilities of completions under a causal LM.

Prompts are left-padded and completions right-padded, so every completion starts at the same
column and the model only has to produce logits for the last T+1 positions. Position ids are
derived from the attention mask, as `generate` does for left-padded batches, so the numbers
match the distribution the completions were sampled from.

Shared prompts (`Packed`, `packed_logprobs`): the G completions of a group share one prompt.
A `Packed` batch stores each distinct prompt once; its prompts are run once (a prefill whose
KV cache is then selected out to every row) and the completions attend to that cache, with
the gradient flowing back through it. The values are those of one forward pass over each row's
prompt + completion (tested to float tolerance); the work is m·P + n·T tokens instead of
n·(P + T). Models whose layers drop the cache (gradient checkpointing in training) are refused
with an error; the caller turns sharing off for them (`Packed.unshared`).

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
from dataclasses import dataclass
from typing import Any

import torch

from aapo.models import forward_kwargs

# elements of one float32 block of [rows, positions, V] logits (64 MiB)
BLOCK_ELEMENTS = 1 << 24


@dataclass
class Packed:
    """Completions and their prompts, each distinct prompt stored once."""

    prompt_ids: torch.Tensor  # [m, P], left-padded
    prompt_attention: torch.Tensor  # [m, P]
    prompt_index: torch.Tensor  # [n]: the prompt of each completion row
    completion_ids: torch.Tensor  # [n, T], right-padded
    completion_mask: torch.Tensor  # [n, T] float: the real completion tokens

    @classmethod
    def build(
        cls,
        prompts: list[list[int]],
        prompt_index: list[int],
        completions: list[list[int]],
        pad_id: int,
    ) -> Packed:
        """Completions are taken as given, EOS included when they end with one (`Sample`)."""
        if len(prompt_index) != len(completions):
            raise ValueError(f"{len(prompt_index)} prompt indices but {len(completions)} rows")
        width_p = max(len(p) for p in prompts)
        width_c = max(1, max(len(c) for c in completions))
        prompt_ids = torch.full((len(prompts), width_p), pad_id, dtype=torch.long)
        prompt_attention = torch.zeros((len(prompts), width_p), dtype=torch.long)
        for row, prompt in enumerate(prompts):
            prompt_ids[row, width_p - len(prompt) :] = torch.tensor(prompt, dtype=torch.long)
            prompt_attention[row, width_p - len(prompt) :] = 1
        completion_ids = torch.full((len(completions), width_c), pad_id, dtype=torch.long)
        completion_mask = torch.zeros((len(completions), width_c), dtype=torch.float32)
        for row, completion in enumerate(completions):
            completion_ids[row, : len(completion)] = torch.tensor(completion, dtype=torch.long)
            completion_mask[row, : len(completion)] = 1.0
        index = torch.tensor(prompt_index, dtype=torch.long)
        return cls(prompt_ids, prompt_attention, index, completion_ids, completion_mask)

    @property
    def shares_prompts(self) -> bool:
        return len(self.prompt_ids) < len(self.prompt_index)

    def joined(self) -> tuple[torch.Tensor, torch.Tensor]:
        """→ input_ids [n, P+T], attention_mask [n, P+T]: each row's prompt + completion."""
        rows = self.prompt_index
        input_ids = torch.cat([self.prompt_ids[rows], self.completion_ids], dim=1)
        attention = torch.cat(
            [self.prompt_attention[rows], self.completion_mask.to(torch.long)], dim=1
        )
        return input_ids, attention

    def unshared(self) -> Packed:
        """The same rows with one prompt copy per row (the one-forward-pass layout)."""
        rows = self.prompt_index
        own = torch.arange(len(rows), device=rows.device)
        return Packed(self.prompt_ids[rows], self.prompt_attention[rows], own, *self._completions())

    def to(self, device: Any) -> Packed:
        return Packed(*(t.to(device) for t in (*self._prompts(), *self._completions())))

    def _prompts(self) -> tuple[torch.Tensor, ...]:
        return self.prompt_ids, self.prompt_attention, self.prompt_index

    def _completions(self) -> tuple[torch.Tensor, ...]:
        return self.completion_ids, self.completion_mask


def pack(
    prompts: list[list[int]], completions: list[list[int]], pad_id: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """→ input_ids [n, P+T], attention_mask [n, P+T], completion_mask [n, T] (float), one
    prompt per completion."""
    if len(prompts) != len(completions):
        raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
    packed = Packed.build(prompts, list(range(len(prompts))), completions, pad_id)
    return (*packed.joined(), packed.completion_mask)


def packed_logprobs(model: Any, batch: Packed, temperature: float = 1.0) -> torch.Tensor:
    """log softmax(logits / T)[o_t] of every completion token → [n, T] (fp32); each shared
    prompt is computed once (see the module docstring) where the model's forward takes a KV
    cache."""
    cache_keyword = forward_kwargs(model)["cache"]
    if not batch.shares_prompts or cache_keyword is None:
        T = batch.completion_ids.shape[1]
        return completion_logprobs(model, *batch.joined(), T, temperature)
    return _shared_prompt_logprobs(model, batch, temperature or 1.0, cache_keyword)


def _shared_prompt_logprobs(
    model: Any, batch: Packed, temperature: float, cache_keyword: str
) -> torch.Tensor:
    from transformers import DynamicCache

    rows, targets = batch.prompt_index, batch.completion_ids  # [n], [n, T]
    base = getattr(model, "module", model)
    cache = DynamicCache(config=base.config)
    width = batch.prompt_ids.shape[1]
    positions = (batch.prompt_attention.cumsum(-1) - 1).clamp(min=0)  # [m, P]
    prefill = model(
        input_ids=batch.prompt_ids,
        attention_mask=batch.prompt_attention,
        position_ids=positions,
        logits_to_keep=1,
        use_cache=True,
        **{cache_keyword: cache},
    ).logits  # [m, 1, V]: the last prompt position predicts the first completion token
    if cache.get_seq_length() != width:
        raise RuntimeError(
            "the model did not fill the KV cache of the shared prompts (gradient "
            "checkpointing drops it); compute these log-probs from unshared rows"
        )
    first = tempered_token_logprobs(prefill[rows], targets[:, :1], temperature)  # [n, 1]
    if targets.shape[1] == 1:
        return first
    cache.batch_select_indices(rows)  # differentiable: each row reads its prompt's keys
    inputs = targets[:, :-1]  # [n, T-1]: token j predicts token j + 1
    attention = torch.cat([batch.prompt_attention[rows], batch.completion_mask[:, :-1].long()], 1)
    steps = torch.arange(inputs.shape[1], device=inputs.device)
    logits = model(
        input_ids=inputs,
        attention_mask=attention,
        position_ids=positions[rows, -1:] + 1 + steps,
        logits_to_keep=inputs.shape[1],
        use_cache=True,
        **{cache_keyword: cache},
    ).logits  # [n, T-1, V]
    rest = tempered_token_logprobs(logits, targets[:, 1:], temperature)
    return torch.cat([first, rest], dim=1)


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
    peft_model: Any, batch: Packed, temperature: float = 1.0
) -> torch.Tensor:
    """Reference log-probs of a LoRA policy: its base weights with the adapters disabled.

    With LoRA the frozen reference is the base model itself, so the KL term must read it
    this way; using no reference at all would silently drop the KL. No gradient.
    """
    if not hasattr(peft_model, "disable_adapter"):
        raise TypeError("adapter_disabled_logprobs needs a peft model (with disable_adapter())")
    with torch.no_grad(), peft_model.disable_adapter():
        return packed_logprobs(peft_model, batch, temperature)
