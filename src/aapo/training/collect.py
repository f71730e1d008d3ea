"""Steps 1-3 of Algorithm 1: sample the policy (and reference) groups of a generation batch and
score them, optionally keeping only groups that carry a learning signal.

`collect` returns this process's share of one generation batch as a `Batch`. Without group
selection that is simply the prompts this process drew. With it (DAPO's `dynamic_sampling`,
GPG's `resample_min_informative`), groups whose policy rewards all tie are set aside and new
prompts are drawn until enough informative groups exist, up to `max_sampling_rounds` rounds;
the batch is then assembled from every process's groups (informative first, tied ones only to
fill what is left) and split evenly again, so every process runs the same number of
micro-batches and the batch keeps its size.

The reference is one `Reference` (training/reference/rollouts.py), whatever its source: the
frozen model sampled here or a cache read here; None when the estimator needs none.
Left out: advantages and the update (step.py, update.py).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from aapo.algorithms import as_groups, combine_rewards, group_stats
from aapo.data.rows import PromptRow
from aapo.metrics import timed
from aapo.rewards.scoring import RewardScorer
from aapo.rollout import Sample, Sampler, SamplingParams, flatten
from aapo.training.distributed import gather_lists
from aapo.training.reference import Reference
from aapo.training.scored import Scored, score


@dataclass
class Batch:
    """This process's share of one generation batch."""

    rows: list[PromptRow]  # [B_local]
    policy: Scored
    reference: Scored | None  # AAPO's reference groups, paired by position
    metrics: dict[str, float]  # timings and group-selection counts


@dataclass(frozen=True, eq=False)
class Group:
    """One prompt's group, as it travels between processes during group selection."""

    row: PromptRow
    samples: list[Sample]  # [G]
    per_function: torch.Tensor  # [K, G]
    ref_samples: list[Sample] | None  # None: no reference, or a cache (rewards only)
    ref_per_function: torch.Tensor | None
    tied: bool  # every valid policy reward equal: no group-relative signal


def collect(
    rows: list[PromptRow],
    draw_more: Callable[[], list[PromptRow]],
    *,
    policy_sampler: Sampler,
    reference: Reference | None,
    scorer: RewardScorer,
    params: SamplingParams,
    accelerator: Any,
    min_informative: float = 0.0,
    max_rounds: int = 1,
) -> Batch:
    """Sample and score `rows`; with `min_informative` > 0, redraw (`draw_more`) until that
    fraction of the batch's groups is informative or `max_rounds` rounds were sampled."""
    times: dict[str, float] = {}

    def sample_and_score(rows: list[PromptRow]) -> tuple[Scored, Scored | None]:
        policy = _policy(rows, policy_sampler, scorer, params, times)  # 1, 3
        if reference is None:
            return policy, None
        return policy, reference.rollouts(rows, params, times)  # 2, 3

    policy, reference = sample_and_score(rows)
    if min_informative <= 0:
        return Batch(rows, policy, reference, times)
    groups = _groups(rows, policy, reference)
    pool = gather_lists(accelerator, groups)
    needed = len(pool)  # the batch keeps its global size
    wanted = math.ceil(min_informative * needed)
    rounds = 1
    while sum(not g.tied for g in pool) < wanted and rounds < max_rounds:
        more = draw_more()
        policy, reference = sample_and_score(more)
        pool += gather_lists(accelerator, _groups(more, policy, reference))
        rounds += 1
    chosen, dropped = _select(pool, needed)
    share = needed // accelerator.num_processes
    start = accelerator.process_index * share
    local = chosen[start : start + share]
    times.update(
        {
            "sampling/rounds": float(rounds),
            "sampling/dropped_groups": float(dropped),
            "sampling/tied_groups_kept": float(sum(g.tied for g in chosen)),
        }
    )
    return Batch([g.row for g in local], *_rebuild(local, scorer), times)


def _policy(
    rows: list[PromptRow],
    sampler: Sampler,
    scorer: RewardScorer,
    params: SamplingParams,
    times: dict[str, float],
) -> Scored:
    with timed(times, "time/policy_generation"):  # 1
        samples = flatten(sampler.generate([row.prompt_ids for row in rows], params))
    with timed(times, "time/rewards"):  # 3
        return score(scorer, rows, samples, params.n)


def _groups(rows: list[PromptRow], policy: Scored, reference: Scored | None) -> list[Group]:
    G = policy.rewards.shape[1]
    tied = group_stats(policy.rewards, policy.valid).tied.tolist()
    out = []
    for b, row in enumerate(rows):
        cut = slice(b * G, (b + 1) * G)
        out.append(
            Group(
                row=row,
                samples=policy.samples[cut],
                per_function=policy.per_function[:, cut],
                ref_samples=_cut(reference.samples, cut) if reference else None,
                ref_per_function=reference.per_function[:, cut] if reference else None,
                tied=bool(tied[b]),
            )
        )
    return out


def _select(pool: list[Group], needed: int) -> tuple[list[Group], int]:
    """Informative groups first (in sampling order), tied ones only to fill the batch."""
    informative = [g for g in pool if not g.tied]
    tied = [g for g in pool if g.tied]
    keep_informative = informative[:needed]
    fill = tied[: needed - len(keep_informative)]
    position = {id(g): i for i, g in enumerate(pool)}
    chosen = sorted(keep_informative + fill, key=lambda g: position[id(g)])
    return chosen, len(pool) - len(chosen)


def _rebuild(groups: list[Group], scorer: RewardScorer) -> tuple[Scored, Scored | None]:
    G = len(groups[0].samples)

    def side(samples: list[Sample] | None, per_function: torch.Tensor) -> Scored:
        rewards, valid = combine_rewards(per_function, scorer.weights, names=scorer.names)
        return Scored(samples, per_function, as_groups(rewards, G), as_groups(valid, G))

    policy = side(
        [s for g in groups for s in g.samples], torch.cat([g.per_function for g in groups], 1)
    )
    if groups[0].ref_per_function is None:
        return policy, None
    cached = groups[0].ref_samples is None  # rewards only
    reference = side(
        None if cached else [s for g in groups for s in g.ref_samples],
        torch.cat([g.ref_per_function for g in groups], 1),
    )
    return policy, reference


def _cut(samples: list[Sample] | None, cut: slice) -> list[Sample] | None:
    return None if samples is None else samples[cut]
