"""Per-token policy losses, the k3 KL estimator, and batch-split-invariant loss aggregation.

Shapes: n completions in one micro-batch, T completion tokens (padded); `mask` [n, T] marks the
real completion tokens. Policy losses return per-token tensors; `aggregate_loss` turns them into
this micro-batch's share of the whole optimizer batch's loss. Its normalisers (token and sequence
counts) are counted over the whole batch (all micro-batches, all processes) by the caller, so
summing the shares gives the full-batch loss and the gradient does not depend on the split
(docs/ALGORITHMS.md §4.4; the authors' code normalised per micro-batch, known trap 4).

Left out: computing log-probs from a model (training/logprobs.py), the KL coefficient β, counting
tokens across processes, and the optimizer step (training/update.py).
"""

from __future__ import annotations

from numbers import Real

import torch
from torch import Tensor

AGGREGATION_MODES = ("token_mean", "sequence_mean", "constant")
# the clip masks `clipped_surrogate_loss` returns, under the metric names TRL logs them as
CLIP_METRIC_NAMES = {
    "low_clipped": "clip_ratio/low_mean",
    "high_clipped": "clip_ratio/high_mean",
    "region_clipped": "clip_ratio/region_mean",
}


def _check_same_shape(**tensors: Tensor) -> None:
    shapes = {name: tuple(t.shape) for name, t in tensors.items()}
    if len(set(shapes.values())) > 1:
        listed = ", ".join(f"{name} {shape}" for name, shape in shapes.items())
        raise ValueError(f"shapes must match: {listed}")


def _per_token_advantages(advantages: Tensor, logps: Tensor) -> Tensor:
    """One advantage per completion `[n]` (or per token `[n, T]`) → broadcastable to logps."""
    if logps.ndim != 2:
        raise ValueError(f"logps must be [n, T], got shape {tuple(logps.shape)}")
    if advantages.shape == logps.shape:
        return advantages
    if advantages.shape == logps.shape[:1]:
        return advantages[:, None]  # [n, 1]
    raise ValueError(
        f"advantages must be [n] or [n, T] for logps {tuple(logps.shape)}, "
        f"got {tuple(advantages.shape)}"
    )


def weighted_nll_loss(logps: Tensor, advantages: Tensor) -> Tensor:
    """AAPO and GPG (eq. 4): -A_i · log π(o_i,t) per token, `[n, T]`. No ratio, no clip."""
    return -_per_token_advantages(advantages, logps) * logps


def clipped_surrogate_loss(
    logps: Tensor,
    old_logps: Tensor,
    advantages: Tensor,
    epsilon_low: float = 0.2,
    epsilon_high: float | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """PPO's clipped surrogate per token: -min(ρA, clip(ρ, 1-ε_low, 1+ε_high)A), ρ = π/π_old.

    `epsilon_high` None means symmetric (= `epsilon_low`); DAPO raises it to 0.28. Also returns
    per-token bool masks of where the clip took the gradient away: "low_clipped" (ρ below the
    band with A < 0), "high_clipped" (ρ above it with A > 0), "region_clipped" (either).
    """
    epsilon_high = epsilon_low if epsilon_high is None else epsilon_high
    if not 0 <= epsilon_low < 1:
        raise ValueError(f"epsilon_low must be in [0, 1), got {epsilon_low}")
    if not epsilon_high >= 0:
        raise ValueError(f"epsilon_high must be >= 0, got {epsilon_high}")
    _check_same_shape(logps=logps, old_logps=old_logps)
    advantages = _per_token_advantages(advantages, logps)  # [n, 1] or [n, T]
    ratio = torch.exp(logps - old_logps)  # [n, T]
    unclipped = ratio * advantages
    clipped = ratio.clamp(1 - epsilon_low, 1 + epsilon_high) * advantages
    per_token = -torch.minimum(unclipped, clipped)  # [n, T]
    low = (ratio < 1 - epsilon_low) & (advantages < 0)
    high = (ratio > 1 + epsilon_high) & (advantages > 0)
    return per_token, {"low_clipped": low, "high_clipped": high, "region_clipped": low | high}


def k3_kl(logps: Tensor, ref_logps: Tensor) -> Tensor:
    """k3 estimator of KL(π‖π_ref) per token: exp(ref - logp) - (ref - logp) - 1 (>= 0)."""
    _check_same_shape(logps=logps, ref_logps=ref_logps)
    log_ratio = ref_logps - logps
    return torch.exp(log_ratio) - log_ratio - 1


def nll_policy_loss(
    logps: Tensor,
    *,
    advantages: Tensor,
    old_logps: Tensor | None = None,
    epsilon_low: float = 0.2,
    epsilon_high: float | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """`weighted_nll_loss` behind the uniform policy-loss call; the ratio arguments are unused."""
    return weighted_nll_loss(logps, advantages), {}


def clipped_policy_loss(
    logps: Tensor,
    *,
    advantages: Tensor,
    old_logps: Tensor | None = None,
    epsilon_low: float = 0.2,
    epsilon_high: float | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """`clipped_surrogate_loss` behind the uniform policy-loss call.

    `old_logps` None means one update per sampled batch: the old policy is the current one, so
    ρ = 1 in value while the gradient still flows through `logps`.
    """
    if old_logps is None:
        old_logps = logps.detach()
    return clipped_surrogate_loss(logps, old_logps, advantages, epsilon_low, epsilon_high)


def truncated_importance_weights(
    train_logps: Tensor, engine_logps: Tensor, cap: float
) -> tuple[Tensor, Tensor]:
    """Per-token weights min(π_train / π_engine, cap) = min(exp(train − engine), cap), detached,
    and where the cap acted (`[n, T]` each).

    Tokens sampled by an inference engine come from π_engine, not the π_train the loss assumes;
    weighting each token's loss by this ratio corrects the expectation, and the cap bounds the
    variance a rare token could add (truncated importance sampling; docs/ALGORITHMS.md §11).
    The weight multiplies any policy loss, the plain NLL of AAPO and GPG included.
    """
    if not cap >= 1:
        raise ValueError(f"the importance-weight cap must be >= 1, got {cap}")
    _check_same_shape(train_logps=train_logps, engine_logps=engine_logps)
    ratio = torch.exp((train_logps - engine_logps).detach())
    return ratio.clamp(max=cap), ratio > cap


def _check_count(name: str, value: float | Tensor, minimum: int) -> None:
    if isinstance(value, Tensor):
        if value.numel() != 1:
            raise ValueError(f"{name} must be a single number, got shape {tuple(value.shape)}")
        return
    if isinstance(value, bool) or not isinstance(value, Real) or not value >= minimum:
        raise ValueError(f"{name} must be a number >= {minimum}, got {value!r}")


def _as_divisor(value: float | Tensor, like: Tensor) -> Tensor:
    # at least 1: a batch with no completion tokens has loss 0, not 0/0
    return torch.as_tensor(value, dtype=like.dtype, device=like.device).clamp(min=1)


def aggregate_loss(
    per_token: Tensor,
    mask: Tensor,
    mode: str,
    *,
    num_tokens: float | Tensor,
    num_sequences: float | Tensor,
    max_completion_length: int | None = None,
) -> Tensor:
    """This micro-batch's share of the whole optimizer batch's loss (a scalar).

    `num_tokens` and `num_sequences` count the WHOLE optimizer batch (every micro-batch, every
    process); summing the returns over micro-batches then gives the full-batch loss exactly.
      token_mean:    Σ per_token·mask / num_tokens                       (DAPO, AAPO, GPG)
      sequence_mean: Σ_i (Σ_t per_token·mask / len_i) / num_sequences    (GRPO)
      constant:      Σ per_token·mask / (max_completion_length · num_sequences)  (Dr. GRPO)
    `mask` may be bool or 0/1 of any dtype; nonzero means "real token". A zero-length
    completion contributes 0.
    """
    if per_token.ndim != 2:
        raise ValueError(f"per_token must be [n, T], got shape {tuple(per_token.shape)}")
    _check_same_shape(per_token=per_token, mask=mask)
    if mode not in AGGREGATION_MODES:
        raise ValueError(f"aggregation mode must be one of {AGGREGATION_MODES}, got {mode!r}")
    _check_count("num_tokens", num_tokens, minimum=0)
    _check_count("num_sequences", num_sequences, minimum=1)
    mask = mask != 0
    # where, not multiply: padding may hold -inf log-probs, and -inf · 0 is NaN
    masked = torch.where(mask, per_token, 0.0)  # [n, T]
    if mode == "token_mean":
        return masked.sum() / _as_divisor(num_tokens, masked)
    if mode == "sequence_mean":
        lengths = mask.sum(dim=1).clamp(min=1)  # [n]
        return (masked.sum(dim=1) / lengths).sum() / _as_divisor(num_sequences, masked)
    if isinstance(max_completion_length, bool) or not (
        isinstance(max_completion_length, int) and max_completion_length >= 1
    ):
        raise ValueError(
            "aggregation 'constant' divides by max_completion_length, which must be an int "
            f">= 1, got {max_completion_length!r}"
        )
    return masked.sum() / (max_completion_length * _as_divisor(num_sequences, masked))
