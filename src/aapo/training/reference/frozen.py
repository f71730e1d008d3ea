"""The frozen reference policy π_ref: the initial weights, never updated.

AAPO samples its momentum baseline from it whatever beta is (the authors' code built it only
when beta > 0, and in two of three paths sampled the policy: docs/ALGORITHMS.md §8.1-2). Without
LoRA it is a deep copy taken before training with gradients off; with LoRA it is the same
model with its adapters disabled, which costs no memory.
"""

from __future__ import annotations

import copy
from typing import Any

from aapo.rollout import Sample, Sampler, SamplingParams


def frozen_copy(model: Any) -> Any:
    reference = copy.deepcopy(model)
    reference.eval()
    reference.requires_grad_(False)
    return reference


class AdapterDisabledSampler:
    """Samples from a PEFT model's base weights by disabling its adapters for the call."""

    def __init__(self, inner: Sampler, peft_model: Any) -> None:
        if not hasattr(peft_model, "disable_adapter"):
            raise TypeError("AdapterDisabledSampler needs a peft model (with disable_adapter())")
        self.inner = inner
        self.peft_model = peft_model

    def generate(self, prompts: list[list[int]], params: SamplingParams) -> list[list[Sample]]:
        with self.peft_model.disable_adapter():
            return self.inner.generate(prompts, params)
