"""A faster transformers sampler: each prompt is prefilled once for its whole group.

`model.generate(num_return_sequences=G)` copies every prompt G times before the prefill, keeps
finished rows in the batch until the longest completion ends, and spends per-token time on
machinery a rollout does not use (logits-processor lists, stopping-criteria objects, streamer
checks). `GroupSampler` prefills the B prompts of a chunk once (left padding), repeats the KV
cache to B·G rows, then decodes with one forward per token on the rows still running; rows that
end (on an EOS id or at `max_new_tokens`) leave the batch and its cache.

It draws from the distribution `generate(do_sample=True, temperature=T, top_p=p, top_k=0)`
draws from: float32 logits, divided by T, nucleus-filtered with `TopPLogitsWarper`'s rule
(`_top_p_filter`), then `torch.multinomial` on torch's global RNG; temperature 0 is argmax.
Only the random stream differs (finished rows draw nothing), so seeded runs repeat exactly but
are not token-for-token those of `generate`. Left out: the sampling extras a model's
`generation_config` may ask for (repetition penalty, min-p, top-k), beam search, and models
whose cache is not transformers' `DynamicCache` (its sliding-window layers work: the model
builds their masks from the 2-D attention mask we pass).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch

from aapo.models import forward_kwargs
from aapo.rollout.sampler import Sample, SamplingParams, pad_and_eos_ids

COMPACT_FRACTION = 0.0
"""Finished rows leave the decode batch once they are more than this fraction of it (0: at
once, 1: never). Measured by benchmarks/sampler_speed.py: at once and 0.25 are level on the
bundled model (2.05x and 2.17x generate), at once is ahead on SmolLM2 (1.75x against 1.36x),
never compacting gives 1.2x; selecting the cache's rows costs about one step's cache growth."""


class GroupSampler:
    """One prefill per prompt, a KV cache shared by its n completions, finished rows dropped.

    `max_batch_size` bounds the decode batch (prompts × n rows per chunk; a larger group is
    split); `compact_fraction` is when finished rows are dropped (see `COMPACT_FRACTION`).
    Implements the `Sampler` protocol; `HFSampler` stays the reference it is tested against."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        max_batch_size: int = 256,
        *,
        compact_fraction: float = COMPACT_FRACTION,
    ) -> None:
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        if not 0 <= compact_fraction <= 1:
            raise ValueError(f"compact_fraction must be in [0, 1], got {compact_fraction}")
        self.model = model
        self.tokenizer = tokenizer
        self.max_batch_size = max_batch_size
        self.compact_fraction = compact_fraction
        self.pad_id, self.eos_ids = pad_and_eos_ids(model, tokenizer)
        self._forward_kwargs = forward_kwargs(model)
        if self._forward_kwargs["cache"] is None:
            raise TypeError(
                f"GroupSampler needs a model whose forward takes a KV cache; "
                f"{type(model).__name__}'s does not (use sampler: hf)"
            )

    @torch.no_grad()
    def generate(self, prompts: list[list[int]], params: SamplingParams) -> list[list[Sample]]:
        for index, ids in enumerate(prompts):
            if len(ids) == 0:
                raise ValueError(f"cannot sample from an empty prompt (prompt {index})")
        was_training = self.model.training
        self.model.eval()
        try:
            if params.n > self.max_batch_size:  # one group alone exceeds the bound: split it
                return [self._split_group(prompt, params) for prompt in prompts]
            per_call = self.max_batch_size // params.n
            out: list[list[Sample]] = []
            for start in range(0, len(prompts), per_call):
                out.extend(self._generate_chunk(prompts[start : start + per_call], params))
            return out
        finally:
            self.model.train(was_training)

    def _split_group(self, prompt: list[int], params: SamplingParams) -> list[Sample]:
        samples: list[Sample] = []
        for start in range(0, params.n, self.max_batch_size):
            piece = replace(params, n=min(self.max_batch_size, params.n - start))
            samples.extend(self._generate_chunk([prompt], piece)[0])
        return samples

    def _generate_chunk(
        self, prompts: list[list[int]], params: SamplingParams
    ) -> list[list[Sample]]:
        from transformers import DynamicCache

        device = next(self.model.parameters()).device
        n, new = params.n, params.max_new_tokens
        width = max(len(p) for p in prompts)
        input_ids = torch.full((len(prompts), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(prompts), width + new), dtype=torch.long)  # [B, W + N]
        for row, ids in enumerate(prompts):  # left padding keeps every prompt's end aligned
            input_ids[row, width - len(ids) :] = torch.tensor(ids)
            mask[row, width - len(ids) :] = 1  # generated positions are attended once written
        input_ids, mask = input_ids.to(device), mask.to(device)
        positions = (mask[:, :width].cumsum(-1) - 1).clamp(min=0)  # pads: any position, masked

        cache = DynamicCache(config=self.model.config)
        logits = self._forward(input_ids, mask[:, :width], positions, cache)  # [B, V]
        cache.batch_repeat_interleave(n)  # the group's n completions share its prefill
        logits = logits.repeat_interleave(n, dim=0)  # [B·n, V]
        mask = mask.repeat_interleave(n, dim=0)
        next_pos = positions[:, -1].repeat_interleave(n) + 1  # [B·n]

        eos = torch.tensor(self.eos_ids, device=device)
        tokens = torch.full((len(prompts) * n, new), self.pad_id, dtype=torch.long, device=device)
        lengths = torch.full((len(prompts) * n,), new, dtype=torch.long, device=device)
        rows = torch.arange(len(prompts) * n, device=device)  # output row of each active row
        done = torch.zeros(len(rows), dtype=torch.bool, device=device)
        for step in range(new):
            next_tokens = _next_tokens(logits, params.temperature, params.top_p)  # [A]
            tokens[rows, step] = next_tokens
            stopped = torch.isin(next_tokens, eos) & ~done
            lengths[rows] = torch.where(stopped, step + 1, lengths[rows])  # EOS is kept
            done |= stopped
            finished = int(done.sum())  # the loop's one host sync per token
            if step == new - 1 or finished == len(rows):
                break
            if finished > self.compact_fraction * len(rows):
                keep = (~done).nonzero().squeeze(1)
                cache.batch_select_indices(keep)
                rows, mask, next_pos = rows[keep], mask[keep], next_pos[keep]
                next_tokens, done = next_tokens[keep], done[keep]
            length = width + step + 1
            logits = self._forward(
                next_tokens[:, None], mask[:, :length], (next_pos + step)[:, None], cache
            )
        return self._to_samples(tokens, lengths, len(prompts), n)

    def _forward(
        self, input_ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, cache: Any
    ) -> torch.Tensor:
        """Last-position float32 logits `[A, V]`; the cache grows in place."""
        out = self.model(
            input_ids=input_ids,
            attention_mask=mask,
            position_ids=positions,
            use_cache=True,
            **{self._forward_kwargs["cache"]: cache},
            **self._forward_kwargs["extra"],
        )
        return out.logits[:, -1].float()

    def _to_samples(
        self, tokens: torch.Tensor, lengths: torch.Tensor, prompts: int, n: int
    ) -> list[list[Sample]]:
        eos = set(self.eos_ids)
        samples = []
        for ids, length in zip(tokens.tolist(), lengths.tolist(), strict=True):
            completion = ids[:length]
            truncated = completion[-1] not in eos
            text = self.tokenizer.decode(completion, skip_special_tokens=True)
            samples.append(Sample(completion_ids=completion, text=text, truncated=truncated))
        return [samples[i * n : (i + 1) * n] for i in range(prompts)]


def _next_tokens(logits: torch.Tensor, temperature: float, top_p: float) -> torch.Tensor:
    """`[A, V]` float32 logits → `[A]` token ids, as `generate` picks them."""
    if temperature == 0:
        return logits.argmax(dim=-1)
    if temperature != 1.0:
        logits = logits / temperature
    if top_p < 1.0:
        logits = _top_p_filter(logits, top_p)
    return torch.multinomial(torch.softmax(logits, dim=-1), num_samples=1).squeeze(1)


def _top_p_filter(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """Nucleus filter with `TopPLogitsWarper`'s semantics (min_tokens_to_keep=1).

    Sorted ascending, a token is dropped when the probability mass at or below it (itself
    included) is <= 1 - top_p; the most probable token always stays. Ties fall as the same
    ascending `torch.sort` orders them, so the kept set is the one `generate` keeps."""
    ascending, order = torch.sort(logits, descending=False)
    mass_up_to = ascending.softmax(dim=-1).cumsum(dim=-1)
    drop_sorted = mass_up_to <= 1 - top_p
    drop_sorted[:, -1] = False
    drop = drop_sorted.scatter(1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))
