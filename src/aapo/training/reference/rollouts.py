"""AAPO's reference rollouts behind one seam (docs/ALGORITHMS.md §8-9).

`Reference.rollouts(rows, params, times)` gives the frozen reference π_ref's G scored
completions for each prompt, paired by position with the policy's, as `Scored` (rewards and
validity `[B, G]`; the completions themselves where the source has them). One implementation
per source, chosen once by `builders.build_reference`; the step never asks which:
- `SampledReference`: the frozen model (a deep copy of the initial weights, or the policy with
  its LoRA adapters disabled, `frozen.py`) sampled during the step;
- `CachedReference`: rewards precomputed by `aapo reference` or imported from completions
  sampled elsewhere (`cache.py`), the draw of the epoch each prompt is met in.
π_ref is the initial policy and never moves: tests/unit/training/reference/test_rollouts.py
holds every implementation to that after training steps.

Left out: the KL term's reference log-probs (`builders.build_reference_logprobs`), which read
the frozen model directly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from aapo.data.rows import PromptRow
from aapo.metrics import timed
from aapo.rewards.scoring import RewardScorer
from aapo.rollout import Sampler, SamplingParams, flatten
from aapo.training.reference.cache import ReferenceCache, describe_source
from aapo.training.scored import Scored, score


class Reference(Protocol):
    """π_ref's scored groups for a batch of prompts."""

    def rollouts(
        self, rows: list[PromptRow], params: SamplingParams, times: dict[str, float]
    ) -> Scored:
        """`params.n` scored completions per row, group-major; time spent is added to
        `times` (`time/reference_generation`, and `time/rewards` for scoring)."""
        ...

    def provenance(self) -> str | None:
        """A line for logs, the run summary and the model card when the rollouts were not
        sampled by aapo from the initial weights; None when they were."""
        ...


@dataclass
class SampledReference:
    """The frozen model, sampled in the step and scored like the policy."""

    sampler: Sampler  # over the frozen copy, or the adapter-disabled policy
    scorer: RewardScorer

    def rollouts(
        self, rows: list[PromptRow], params: SamplingParams, times: dict[str, float]
    ) -> Scored:
        with timed(times, "time/reference_generation"):
            samples = flatten(self.sampler.generate([row.prompt_ids for row in rows], params))
        with timed(times, "time/rewards"):
            return score(self.scorer, rows, samples, params.n)

    def provenance(self) -> str | None:
        return None


@dataclass
class CachedReference:
    """Rewards read from a reference cache: prompt `row.index`, draw `row.epoch`."""

    cache: ReferenceCache

    def rollouts(
        self, rows: list[PromptRow], params: SamplingParams, times: dict[str, float]
    ) -> Scored:
        with timed(times, "time/reference_generation"):
            taken = self.cache.take([row.index for row in rows], [row.epoch for row in rows])
        return Scored(None, taken.per_function, taken.rewards, taken.valid)

    def provenance(self) -> str | None:
        source = self.cache.source
        return None if source is None else describe_source(source)
