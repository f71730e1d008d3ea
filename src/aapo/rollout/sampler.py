"""The sampler seam: token-id prompts in, G completions per prompt out.

Generation is the hot spot of an RL step, so the trainer and the evaluator only see the small
`Sampler` protocol; `HFSampler` serves any transformers causal LM (CPU or GPU) and a vLLM
backend plugs in behind the same call (`aapo.rollout.vllm_sampler`). What this leaves out:
log-probabilities beyond those a backend reports anyway (`Sample.logprobs`; the trainer
recomputes them with gradients in one forward pass) and any reward logic. Completions keep the
EOS token that stopped them (docs/ALGORITHMS.md §6).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import torch


@dataclass(frozen=True)
class SamplingParams:
    """How to sample; `n` completions per prompt. temperature 0 means greedy."""

    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 64

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"SamplingParams.n must be >= 1, got {self.n}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")


@dataclass
class Sample:
    """One completion as it was sampled (docs/ALGORITHMS.md §6).

    completion_ids: the sampled token ids, unpadded; a completion that stopped on an EOS token
    ends with that token (it is scored, counted in the token normaliser and trained, so the
    stop decision is learned); nothing after it is kept. text: the completion decoded without
    its EOS and without special tokens. truncated: it hit the length cap before any EOS, so
    it has no EOS (truncated completions can be masked out of the loss). logprobs: the
    sampler's log-prob of each token of completion_ids, where it reports them (the vLLM engine:
    `aapo.rollout.vllm_engine`); None from samplers that do not.
    """

    completion_ids: list[int]
    text: str
    truncated: bool
    logprobs: list[float] | None = None


class Sampler(Protocol):
    def generate(self, prompts: list[list[int]], params: SamplingParams) -> list[list[Sample]]:
        """`[B]` token-id prompts → `[B][n]` samples, in prompt order."""
        ...


class HFSampler:
    """Batched `model.generate` with left padding; `max_batch_size` bounds memory (prompts ×
    n sequences per call). Sampling draws from torch's global RNG, so seeding and checkpointing
    that RNG makes runs reproducible."""

    def __init__(self, model: Any, tokenizer: Any, max_batch_size: int = 256) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.max_batch_size = max_batch_size
        self.pad_id, self.eos_ids = pad_and_eos_ids(model, tokenizer)

    @torch.no_grad()
    def generate(self, prompts: list[list[int]], params: SamplingParams) -> list[list[Sample]]:
        per_call = max(1, self.max_batch_size // params.n)
        out: list[list[Sample]] = []
        for start in range(0, len(prompts), per_call):
            out.extend(self._generate_chunk(prompts[start : start + per_call], params))
        return out

    def _generate_chunk(
        self, prompts: list[list[int]], params: SamplingParams
    ) -> list[list[Sample]]:
        empty = [i for i, p in enumerate(prompts) if len(p) == 0]
        if empty:
            raise ValueError(
                f"cannot sample from an empty prompt (prompt {empty[0]} of this batch has no "
                "tokens; does the model's tokenizer encode text to nothing?)"
            )
        device = next(self.model.parameters()).device
        width = max(len(p) for p in prompts)
        input_ids = torch.full((len(prompts), width), self.pad_id, dtype=torch.long)
        attention = torch.zeros((len(prompts), width), dtype=torch.long)
        for row, ids in enumerate(prompts):  # left padding keeps every prompt's end aligned
            input_ids[row, width - len(ids) :] = torch.tensor(ids)
            attention[row, width - len(ids) :] = 1
        greedy = params.temperature == 0
        sampling = {} if greedy else {"temperature": params.temperature, "top_p": params.top_p}
        was_training = self.model.training
        self.model.eval()
        try:
            generated = self.model.generate(
                input_ids=input_ids.to(device),
                attention_mask=attention.to(device),
                do_sample=not greedy,
                num_return_sequences=params.n,
                max_new_tokens=params.max_new_tokens,
                pad_token_id=self.pad_id,
                eos_token_id=self.eos_ids,
                top_k=None if greedy else 0,
                **sampling,
            )
        finally:
            self.model.train(was_training)
        new_tokens = generated[:, width:].tolist()  # [B·n, ≤ max_new_tokens]
        samples = [self._to_sample(ids) for ids in new_tokens]
        return [samples[i * params.n : (i + 1) * params.n] for i in range(len(prompts))]

    def _to_sample(self, ids: list[int]) -> Sample:
        """Cut after the first EOS, keeping it; what follows is padding (often the EOS id)."""
        end = next((i for i, tok in enumerate(ids) if tok in self.eos_ids), None)
        if end is None:
            return Sample(ids, self.tokenizer.decode(ids, skip_special_tokens=True), True)
        text = self.tokenizer.decode(ids[:end], skip_special_tokens=True)
        return Sample(completion_ids=ids[: end + 1], text=text, truncated=False)


def flatten(groups: list[list[Sample]]) -> list[Sample]:
    """`[B][n]` groups as one group-major list of B·n samples."""
    return [sample for group in groups for sample in group]


def pad_and_eos_ids(model: Any, tokenizer: Any) -> tuple[int, list[int]]:
    """The id padding uses (the pad token, else the EOS) and the ids that end a completion."""
    if tokenizer.pad_token_id is None and tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer has neither a pad nor an EOS token; set one")
    pad = tokenizer.pad_token_id
    return (tokenizer.eos_token_id if pad is None else pad), _eos_ids(model, tokenizer)


def _eos_ids(model: Any, tokenizer: Any) -> list[int]:
    """EOS ids from the generation config (chat models often have several) and the tokenizer."""
    return eos_ids_from(getattr(model, "generation_config", None), tokenizer)


def saved_eos_ids(model_path: str, tokenizer: Any) -> list[int]:
    """`_eos_ids` of a saved model without loading its weights: its generation_config.json
    (absent: the tokenizer's EOS alone)."""
    from transformers import GenerationConfig

    try:
        generation_config = GenerationConfig.from_pretrained(model_path)
    except (OSError, ValueError):
        generation_config = None
    return eos_ids_from(generation_config, tokenizer)


def eos_ids_from(generation_config: Any, tokenizer: Any) -> list[int]:
    ids: set[int] = set()
    config_eos = getattr(generation_config, "eos_token_id", None)
    if isinstance(config_eos, int):
        ids.add(config_eos)
    elif config_eos:
        ids.update(config_eos)
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    if not ids:
        raise ValueError("neither the model's generation config nor the tokenizer names an EOS")
    return sorted(ids)
