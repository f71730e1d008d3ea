"""Advantage estimators (GRPO, Dr. GRPO, GPG, AAPO) and the reward plumbing they share.

Pure functions on tensors: no model, no I/O, no global state. Shapes: B prompts, G completions
per prompt (a group), N = B·G completions in prompt-major order, K reward functions.

A completion for which every reward function returned None is *invalid*: it is left out of its
group's statistics and its advantage is exactly 0 (docs/ALGORITHMS.md §2). Rewards must be finite;
"no reward" travels in the `valid` mask that `combine_rewards` returns, never as NaN.

A group whose valid rewards all tie (std 0) has a group-relative term of exactly 0, never NaN:
its mean is set to the common value, so float rounding cannot leak noise into the advantage.

Precision (ALGORITHMS.md §6): weighted sums and group statistics are computed in float64 (float32
squares overflow for |r| above ~1e19 and gave silent zero advantages); what is returned is in
the rewards' own floating dtype, so a float32 batch gives float32 advantages.

Left out: the name registry and `compute_advantages` (registry.py); losses (losses.py); anything
that needs a model or new samples (DAPO's and GPG's redrawing of tied groups is group selection
in training/collect.py, before advantages are computed).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

SCALE_REWARDS = ("group", "batch", "none")
GPG_NORMS = ("1", "std")


@dataclass
class AdvantageResult:
    """What every estimator returns."""

    advantages: Tensor  # [B, G]; 0 where the completion is invalid
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass
class GroupStats:
    """Statistics of each group's valid rewards."""

    mean: Tensor  # [B, 1]; 0 for a group with no valid completion
    std: Tensor  # [B, 1]; unbiased; 0 for a tied group (which includes fewer than two valid)
    tied: Tensor  # [B] bool; every valid reward of the group is equal


def combine_rewards(
    per_function: Tensor,
    weights: Tensor | Sequence[float],
    names: Sequence[str] | None = None,
) -> tuple[Tensor, Tensor]:
    """Weighted nan-sum over reward functions: `[K, N]` scores → `(rewards [N], valid [N])`.

    NaN means "that function returned None" and is skipped. A completion where every function
    returned None is invalid (`valid` False) and gets reward 0.0. The sum is taken in float64
    and returned in the scores' dtype; a sum that does not fit is a ValueError naming the
    reward functions (`names`, else their indices) and values behind it.
    """
    per_function = torch.as_tensor(per_function)
    if per_function.ndim != 2:
        raise ValueError(f"per_function must be [K, N], got shape {tuple(per_function.shape)}")
    if not per_function.is_floating_point():
        per_function = per_function.to(torch.get_default_dtype())
    weights = torch.as_tensor(weights, dtype=per_function.dtype, device=per_function.device)
    if weights.shape != per_function.shape[:1]:
        raise ValueError(
            f"got {weights.numel()} weights for {per_function.shape[0]} reward functions"
        )
    if not torch.isfinite(weights).all():
        raise ValueError(f"reward weights must be finite, got {weights.tolist()}")
    labels = _labels(names, per_function.shape[0])
    _reject_infinite(per_function, labels)
    missing = torch.isnan(per_function)  # [K, N]
    # where, not multiply: NaN * weight is NaN, and weight 0 must not revive a None
    weighted = torch.where(missing, 0.0, per_function.double() * weights.double()[:, None])
    total = weighted.sum(dim=0).to(per_function.dtype)  # [N]
    _reject_overflow(total, per_function, weights, labels)
    return total, (~missing).any(dim=0)


def _labels(names: Sequence[str] | None, count: int) -> list[str]:
    if names is None:
        return [str(k) for k in range(count)]
    if len(names) != count:
        raise ValueError(f"got {len(names)} reward names for {count} reward functions")
    return [repr(name) for name in names]


def _reject_infinite(per_function: Tensor, labels: list[str]) -> None:
    infinite = torch.isinf(per_function).nonzero()
    if len(infinite):
        k, n = infinite[0].tolist()
        raise ValueError(
            f"reward function {labels[k]} returned {per_function[k, n].item()} for completion "
            f"{n}; rewards must be finite (return None for 'not applicable')"
        )


def _reject_overflow(total: Tensor, per_function: Tensor, weights: Tensor, labels: list[str]):
    overflow = (~torch.isfinite(total)).nonzero().flatten()
    if len(overflow):
        n = int(overflow[0])
        terms = [
            f"{labels[k]}: {per_function[k, n].item():g} × weight {weights[k].item():g}"
            for k in range(per_function.shape[0])
            if not torch.isnan(per_function[k, n])
        ]
        raise ValueError(
            f"the weighted reward of completion {n} overflows {per_function.dtype} "
            f"({'; '.join(terms)}); rescale these reward functions or their weights"
        )


def as_groups(flat: Tensor, group_size: int) -> Tensor:
    """View prompt-major `[N]` values as `[B, G]` groups."""
    if flat.ndim != 1:
        raise ValueError(f"expected a flat [N] tensor, got shape {tuple(flat.shape)}")
    if group_size < 1:
        raise ValueError(f"group size must be at least 1, got {group_size}")
    if flat.numel() % group_size:
        raise ValueError(f"group size {group_size} does not divide the {flat.numel()} completions")
    return flat.reshape(-1, group_size)


def check_rewards(rewards: Tensor, what: str = "rewards") -> Tensor:
    """Return `rewards` as a float `[B, G]` tensor, or raise a ValueError saying what is wrong."""
    if not isinstance(rewards, Tensor) or rewards.ndim != 2 or rewards.shape[1] < 1:
        shape = tuple(rewards.shape) if isinstance(rewards, Tensor) else type(rewards).__name__
        raise ValueError(f"{what} must be a [B, G] tensor with G >= 1, got {shape}")
    if not rewards.is_floating_point():
        rewards = rewards.to(torch.get_default_dtype())
    if not torch.isfinite(rewards).all():
        raise ValueError(
            f"{what} contain NaN or inf; a completion without a reward is marked by the "
            "`valid` mask from combine_rewards, and its reward there must be a finite placeholder"
        )
    return rewards


def check_valid(valid: Tensor | None, like: Tensor, what: str = "valid") -> Tensor:
    """Return a bool mask shaped like `like` (all True for None), or raise a ValueError."""
    if valid is None:
        return torch.ones_like(like, dtype=torch.bool)
    if valid.shape != like.shape:
        raise ValueError(f"{what} has shape {tuple(valid.shape)}, the rewards {tuple(like.shape)}")
    if valid.dtype != torch.bool:
        raise ValueError(f"{what} must be a bool tensor, got {valid.dtype}")
    return valid


def group_stats(rewards: Tensor, valid: Tensor | None = None) -> GroupStats:
    """Mean, unbiased std and tie flag of each group's valid rewards; computed in float64,
    returned in the rewards' dtype."""
    rewards = check_rewards(rewards)
    valid = check_valid(valid, rewards)
    if rewards.dtype != torch.float64:
        stats = group_stats(rewards.double(), valid)
        return GroupStats(stats.mean.to(rewards.dtype), stats.std.to(rewards.dtype), stats.tied)
    count = valid.sum(dim=1, keepdim=True)  # [B, 1]
    mean = torch.where(valid, rewards, 0.0).sum(dim=1, keepdim=True) / count.clamp(min=1)
    highest = torch.where(valid, rewards, float("-inf")).amax(dim=1)  # [B]
    lowest = torch.where(valid, rewards, float("inf")).amin(dim=1)  # [B]
    tied = highest <= lowest  # also True with zero or one valid reward
    # a tied group's float mean can be an ulp off its common value; use the value itself
    mean = torch.where(tied[:, None] & (count > 0), highest[:, None], mean)  # [B, 1]
    deviation = torch.where(valid, rewards - mean, 0.0)  # [B, G]
    variance = deviation.square().sum(dim=1, keepdim=True) / (count - 1).clamp(min=1)
    std = torch.where(tied[:, None], 0.0, variance.sqrt())  # [B, 1]
    return GroupStats(mean=mean, std=std, tied=tied)


def _batch_std(rewards: Tensor, valid: Tensor) -> Tensor:
    """Unbiased std over every valid reward of the batch; 0 when they all tie."""
    values = rewards[valid]
    if values.numel() < 2 or bool(values.max() == values.min()):
        return rewards.new_zeros(())
    return values.std()


def _divide(numerator: Tensor, denominator: Tensor) -> Tensor:
    # 0/0 happens only for tied groups with eps = 0; their advantage is 0 by definition
    return torch.where(denominator > 0, numerator / denominator, 0.0)


def _check_eps(eps: float) -> None:
    if not eps >= 0:
        raise ValueError(f"eps must be >= 0, got {eps}")


def _group_term(rewards: Tensor, valid: Tensor, scale_rewards: str, eps: float) -> Tensor:
    """(r - mean) per group, divided as `scale_rewards` says; 0 for invalid completions.
    Computed in float64, returned in the rewards' dtype."""
    if rewards.dtype != torch.float64:
        return _group_term(rewards.double(), valid, scale_rewards, eps).to(rewards.dtype)
    if scale_rewards not in SCALE_REWARDS:
        raise ValueError(f"scale_rewards must be one of {SCALE_REWARDS}, got {scale_rewards!r}")
    _check_eps(eps)
    stats = group_stats(rewards, valid)
    centered = torch.where(valid & ~stats.tied[:, None], rewards - stats.mean, 0.0)  # [B, G]
    if scale_rewards == "none":
        return centered
    if rewards.shape[1] < 2:
        raise ValueError(
            f"scale_rewards={scale_rewards!r} divides by an unbiased std, which is undefined "
            "for groups of one completion; use a group size >= 2 or scale_rewards='none'"
        )
    std = stats.std if scale_rewards == "group" else _batch_std(rewards, valid)
    return _divide(centered, std + eps)


def grpo(
    rewards: Tensor,
    *,
    valid: Tensor | None = None,
    scale_rewards: str = "group",
    eps: float = 1e-4,
) -> AdvantageResult:
    """GRPO: A_i = (r_i - mean(r)) / (std(r) + eps), std per `scale_rewards`."""
    rewards = check_rewards(rewards)
    valid = check_valid(valid, rewards)
    return AdvantageResult(_group_term(rewards, valid, scale_rewards, eps), {})


def dr_grpo(rewards: Tensor, *, valid: Tensor | None = None) -> AdvantageResult:
    """Dr. GRPO: A_i = r_i - mean(r), no std division."""
    rewards = check_rewards(rewards)
    valid = check_valid(valid, rewards)
    return AdvantageResult(_group_term(rewards, valid, "none", 0.0), {})


def gpg(
    rewards: Tensor,
    *,
    valid: Tensor | None = None,
    gpg_norm: str = "1",
    gpg_alpha: bool = True,
    eps: float = 1e-4,
) -> AdvantageResult:
    """GPG: A_i = alpha · (r_i - mean(r)) / F_norm, F_norm = 1 or std(r) + eps.

    alpha = B / (B - M), M the number of tied groups (no signal), so the batch's gradient is not
    diluted by them. alpha = 1 when disabled, and when every group ties (B = M; then every
    advantage is 0 anyway and B / 0 would be meaningless).
    """
    rewards = check_rewards(rewards)
    valid = check_valid(valid, rewards)
    norm = str(gpg_norm)  # YAML reads `gpg_norm: 1` as an int
    if norm not in GPG_NORMS:
        raise ValueError(f"gpg_norm must be one of {GPG_NORMS}, got {gpg_norm!r}")
    centered = _group_term(rewards.double(), valid, "group" if norm == "std" else "none", eps)
    alpha = _gpg_alpha(group_stats(rewards, valid).tied) if gpg_alpha else 1.0
    return AdvantageResult((alpha * centered).to(rewards.dtype), {"gpg/alpha": alpha})


def _gpg_alpha(tied: Tensor) -> float:
    groups, num_tied = tied.numel(), int(tied.sum())
    return 1.0 if num_tied == groups else groups / (groups - num_tied)


def aapo(
    rewards: Tensor,
    *,
    ref_rewards: Tensor,
    valid: Tensor | None = None,
    ref_valid: Tensor | None = None,
    delta_low: float = -0.2,
    delta_high: float = 0.28,
    momentum_clip: bool = True,
    scale_rewards: str = "group",
    eps: float = 1e-4,
) -> AdvantageResult:
    """AAPO (eq. 5): the GRPO term plus the advantage momentum clip(r_i - r^ref_i, δ_low, δ_high).

    The i-th policy completion of a prompt is paired with the i-th reference completion of the
    same prompt. The momentum is 0 where either side of the pair is invalid. The clip metrics
    count completions whose raw momentum lies beyond a bound even when `momentum_clip` is off,
    so the ablation shows how often the clip would have acted.
    """
    rewards = check_rewards(rewards)
    ref_rewards = check_rewards(ref_rewards, "ref_rewards")
    if ref_rewards.shape != rewards.shape:
        raise ValueError(
            f"ref_rewards has shape {tuple(ref_rewards.shape)}, rewards {tuple(rewards.shape)}: "
            "AAPO pairs the i-th reference completion of a prompt with the i-th policy one"
        )
    valid = check_valid(valid, rewards)
    ref_valid = check_valid(ref_valid, ref_rewards, "ref_valid")
    if not delta_low <= delta_high:
        raise ValueError(f"delta_low ({delta_low}) must not exceed delta_high ({delta_high})")
    dtype = rewards.dtype
    group_term = _group_term(rewards.double(), valid, scale_rewards, eps)  # [B, G]
    paired = valid & ref_valid
    raw = torch.where(paired, rewards.double() - ref_rewards.double(), 0.0)  # [B, G]
    momentum = raw.clamp(delta_low, delta_high) if momentum_clip else raw
    advantages = torch.where(valid, group_term + momentum, 0.0).to(dtype)
    tied = group_stats(rewards, valid).tied  # [B]
    return AdvantageResult(
        advantages,
        {
            **_momentum_metrics(raw, momentum, paired, valid, delta_low, delta_high),
            **_mass_metrics(group_term, momentum, valid, tied),
        },
    )


def _momentum_metrics(
    raw: Tensor,
    momentum: Tensor,
    paired: Tensor,
    valid: Tensor,
    delta_low: float,
    delta_high: float,
) -> dict[str, float]:
    """Mean momentum added, and how often it hit each bound, over valid policy completions."""
    count = valid.sum().clamp(min=1)
    return {
        "momentum/mean": float(torch.where(valid, momentum, 0.0).sum() / count),
        "momentum/clip_low_frac": float((paired & (raw < delta_low)).sum() / count),
        "momentum/clip_high_frac": float((paired & (raw > delta_high)).sum() / count),
    }


def _mass_metrics(
    group_term: Tensor, momentum: Tensor, valid: Tensor, tied: Tensor
) -> dict[str, float]:
    """How much of the advantage mass the momentum carries, and how much of that lies in tied
    groups, where it is all there is (docs/ALGORITHMS.md §3.7). NaN when there is no mass."""
    group_mass = torch.where(valid, group_term, 0.0).abs().sum()
    momentum_abs = torch.where(valid, momentum, 0.0).abs()  # [B, G]
    momentum_mass = momentum_abs.sum()
    tied_mass = momentum_abs[tied].sum()
    total = group_mass + momentum_mass
    return {
        "momentum/mass_share": float(momentum_mass / total) if total > 0 else math.nan,
        "momentum/tied_mass_share": (
            float(tied_mass / momentum_mass) if momentum_mass > 0 else math.nan
        ),
    }
