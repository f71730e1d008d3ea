"""Samplers: how completions are drawn from a model (transformers by default, vLLM optional)."""

from aapo.rollout.group_sampler import GroupSampler
from aapo.rollout.sampler import HFSampler, Sample, Sampler, SamplingParams, flatten

SAMPLERS: dict[str, type] = {"group": GroupSampler, "hf": HFSampler}  # by config name

__all__ = [
    "SAMPLERS",
    "GroupSampler",
    "HFSampler",
    "Sample",
    "Sampler",
    "SamplingParams",
    "flatten",
]
