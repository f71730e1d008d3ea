"""Samplers: how completions are drawn from a model (transformers by default, vLLM optional)."""

from aapo.rollout.sampler import HFSampler, Sample, Sampler, SamplingParams

__all__ = ["HFSampler", "Sample", "Sampler", "SamplingParams"]
