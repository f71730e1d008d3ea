"""Steps 1-3 of Algorithm 1: sample the policy (and reference) groups of a generation batch and
score them, optionally keeping only groups that carry a learning signal.

`collect` returns this process's share of one generation batch as a `Batch`. Without group
selection that is simply the prompts this process drew. With it (DAPO's `dynamic_sampling`,
GPG's `resample_min_informative`), groups whose policy rewards all tie are set aside and new
prompts are drawn until enough informative groups exist, up to `max_sampling_rounds` rounds;
the batch is then assembled from every process's groups (informative first, tied ones only to
fill what is left) and split evenly again, so every process runs the same number of
micro-batches and the batch keeps its size.

Left out: advantages and the update (step.py, update.py).
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch

from aapo.algorithms import as_groups, combine_rewards, group_stats
from aapo.data.rows import PromptRow
from aapo.rollout import Sample, Sampler, SamplingParams
from aapo.rollout.reference_cache import ReferenceCache
from aapo.training.scoring import RewardScorer


@dataclass
class Scored:
    """Samples of one side (policy or reference) and their rewards."""

    samples: list[Sample]  # [N] = B·G, group-major
    per_function: torch.Tensor  # [K, N], NaN = not applicable
    rewards: torch.Tensor  # [B, G]
    valid: torch.Tensor  # [B, G]


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
    ref_samples: list[Sample] | None
    ref_per_function: torch.Tensor | None
    tied: bool  # every valid policy reward equal: no group-relative signal


@contextlib.contextmanager
def timed(times: dict[str, float], key: str) -> Iterator[None]:
    start = time.perf_counter()
    yield
    times[key] = times.get(key, 0.0) + time.perf_counter() - start


def collect(
    rows: list[PromptRow],
    draw_more: Callable[[], list[PromptRow]],
    *,
    policy_sampler: Sampler,
    reference_sampler: Sampler | None,
    scorer: RewardScorer,
    params: SamplingParams,
    accelerator: Any,
    reference_cache: ReferenceCache | None = None,
    min_informative: float = 0.0,
    max_rounds: int = 1,
) -> Batch:
    """Sample and score `rows`; with `min_informative` > 0, redraw (`draw_more`) until that
    fraction of the batch's groups is informative or `max_rounds` rounds were sampled."""
    times: dict[str, float] = {}

    def sample_and_score(rows: list[PromptRow]) -> tuple[Scored, Scored | None]:
        policy = _policy(rows, policy_sampler, scorer, params, times)
        if reference_cache is None:
            return policy, _sampled(rows, reference_sampler, scorer, params, times)
        with timed(times, "time/reference_generation"):  # 2, read: the draw of its epoch
            return policy, _cached(reference_cache, rows)

    policy, reference = sample_and_score(rows)
    if min_informative <= 0:
        return Batch(rows, policy, reference, times)
    groups = _groups(rows, policy, reference)
    pool = _all_gather(accelerator, groups)
    needed = len(pool)  # the batch keeps its global size
    wanted = math.ceil(min_informative * needed)
    rounds = 1
    while sum(not g.tied for g in pool) < wanted and rounds < max_rounds:
        more = draw_more()
        policy, reference = sample_and_score(more)
        pool += _all_gather(accelerator, _groups(more, policy, reference))
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
        samples = _flatten(sampler.generate([row.prompt_ids for row in rows], params))
    with timed(times, "time/rewards"):  # 3
        return score(scorer, rows, samples, params.n)


def _sampled(
    rows: list[PromptRow],
    sampler: Sampler | None,
    scorer: RewardScorer,
    params: SamplingParams,
    times: dict[str, float],
) -> Scored | None:
    if sampler is None:
        return None
    with timed(times, "time/reference_generation"):  # 2
        samples = _flatten(sampler.generate([row.prompt_ids for row in rows], params))
    with timed(times, "time/rewards"):  # 3
        return score(scorer, rows, samples, params.n)


def _cached(cache: ReferenceCache, rows: list[PromptRow]) -> Scored:
    taken = cache.take([row.index for row in rows], [row.epoch for row in rows])
    return Scored([], taken.per_function, taken.rewards, taken.valid)


def score(scorer: RewardScorer, rows: list[PromptRow], samples: list[Sample], G: int) -> Scored:
    """TRL's reward call: dataset columns repeated once per completion of the row's group;
    for conversational data, prompts are message lists and each completion is
    `[{"role": "assistant", "content": text}]`, as TRL passes them."""
    columns = {key: [row.columns[key] for row in rows for _ in range(G)] for key in rows[0].columns}
    columns["rendered_prompt"] = [row.rendered_prompt for row in rows for _ in range(G)]
    if rows[0].conversational:
        prompts = columns["prompt"]
        completions: list[Any] = [[{"role": "assistant", "content": s.text}] for s in samples]
    else:
        prompts, completions = columns["problem"], [s.text for s in samples]
    per_function = scorer.score(prompts, completions, [s.completion_ids for s in samples], columns)
    rewards, valid = combine_rewards(per_function, scorer.weights, names=scorer.names)
    return Scored(samples, per_function, as_groups(rewards, G), as_groups(valid, G))


def _flatten(groups: list[list[Sample]]) -> list[Sample]:
    return [sample for group in groups for sample in group]


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
                ref_samples=reference.samples[cut] if reference else None,
                ref_per_function=reference.per_function[:, cut] if reference else None,
                tied=bool(tied[b]),
            )
        )
    return out


def _all_gather(accelerator: Any, groups: list[Group]) -> list[Group]:
    """Every process's groups, in process order, on every process."""
    if accelerator.num_processes == 1:
        return list(groups)
    from accelerate.utils import gather_object

    return [g for part in gather_object([groups]) for g in part]


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

    def side(samples: list[Sample], per_function: torch.Tensor) -> Scored:
        rewards, valid = combine_rewards(per_function, scorer.weights, names=scorer.names)
        return Scored(samples, per_function, as_groups(rewards, G), as_groups(valid, G))

    policy = side(
        [s for g in groups for s in g.samples], torch.cat([g.per_function for g in groups], 1)
    )
    if groups[0].ref_per_function is None:
        return policy, None
    reference = side(
        [s for g in groups for s in g.ref_samples],
        torch.cat([g.ref_per_function for g in groups], 1),
    )
    return policy, reference
