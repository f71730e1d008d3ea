"""Samplers: how completions are drawn from a model (transformers by default, vLLM optional)."""

from aapo.rollout.group_sampler import GroupSampler
from aapo.rollout.sampler import HFSampler, Sample, Sampler, SamplingParams

__all__ = ["GroupSampler", "HFSampler", "Sample", "Sampler", "SamplingParams"]
