"""A `Sampler` backed by vLLM (GPU), for evaluation and for sampling from a frozen model.

Same contract as `HFSampler`: token-id prompts in, `[B][n]` `Sample`s out, completion ids
without the final EOS, text decoded with the same tokenizer call, `truncated` when generation
stopped at the length cap. vLLM is imported only when a `VLLMSampler` is built, so aapo
installs and runs without it (`pip install aapo[vllm]`).

Seeding: vLLM does not read torch's RNG. `set_seed(s)` makes the next `generate` give request
i the seed s + i, so a caller that reseeds per batch (the evaluation harness does) gets
repeatable batches. Left out: syncing weights from a model being trained (this wraps a fixed
checkpoint), LoRA adapters, and multi-node setups beyond what `llm_options` passes to vLLM.
Written against vLLM >= 0.10 (`TokensPrompt` inputs, `finish_reason` "stop"/"length"); not
exercised by the CPU test suite.
"""

from __future__ import annotations

from typing import Any

from aapo.rollout.sampler import Sample, SamplingParams, saved_eos_ids

INSTALL_HINT = "the vllm backend needs vLLM: pip install 'aapo[vllm]' (Linux with a CUDA GPU)"


def import_vllm() -> Any:
    """The vllm module, or an ImportError that says how to install it."""
    try:
        import vllm
    except ImportError as err:
        raise ImportError(INSTALL_HINT) from err
    return vllm


class VLLMSampler:
    """`vllm.LLM` over a model path or hub id; `llm_options` go to `vllm.LLM` unchanged."""

    def __init__(self, model: str, seed: int = 0, dtype: str = "auto", **llm_options: Any) -> None:
        vllm = import_vllm()
        self._vllm = vllm
        self.llm = vllm.LLM(model=model, seed=seed, dtype=dtype, **llm_options)
        self.tokenizer = self.llm.get_tokenizer()
        self.eos_ids = set(saved_eos_ids(model, self.tokenizer))  # vLLM stops on each
        self._next_seed: int | None = None

    def set_seed(self, seed: int) -> None:
        """Seed the requests of the next `generate` call (request i gets seed + i)."""
        self._next_seed = seed

    def generate(self, prompts: list[list[int]], params: SamplingParams) -> list[list[Sample]]:
        if any(len(p) == 0 for p in prompts):
            raise ValueError("cannot sample from an empty prompt")
        from vllm.inputs import TokensPrompt

        base_seed, self._next_seed = self._next_seed, None
        per_request = [self._params(params, None if base_seed is None else base_seed + i)
                       for i in range(len(prompts))]  # fmt: skip
        outputs = self.llm.generate(
            [TokensPrompt(prompt_token_ids=list(p)) for p in prompts],
            sampling_params=per_request,
            use_tqdm=False,
        )
        # vLLM returns outputs in prompt order; each holds n CompletionOutputs
        return [[self._to_sample(c) for c in out.outputs] for out in outputs]

    def _params(self, params: SamplingParams, seed: int | None) -> Any:
        return self._vllm.SamplingParams(
            n=params.n,
            temperature=params.temperature,
            top_p=params.top_p if params.temperature > 0 else 1.0,
            max_tokens=params.max_new_tokens,
            seed=seed,
        )

    def _to_sample(self, completion: Any) -> Sample:
        ids = list(completion.token_ids)
        # the EOS that stopped a sequence stays its last id (the project's convention); the
        # text leaves it out
        end = next((i for i, tok in enumerate(ids) if tok in self.eos_ids), None)
        kept = ids if end is None else ids[: end + 1]
        text = self.tokenizer.decode(ids if end is None else ids[:end], skip_special_tokens=True)
        return Sample(kept, text, truncated=completion.finish_reason == "length")
