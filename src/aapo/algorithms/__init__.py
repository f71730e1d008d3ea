"""The algorithm core: advantage estimators, policy losses, loss aggregation and their registries.

Pure functions on tensors (no model, no I/O). `registry.py` shows how to add an estimator.
"""

from .advantages import (
    GPG_NORMS,
    SCALE_REWARDS,
    AdvantageResult,
    GroupStats,
    aapo,
    as_groups,
    combine_rewards,
    dr_grpo,
    gpg,
    group_stats,
    grpo,
)
from .losses import (
    AGGREGATION_MODES,
    CLIP_METRIC_NAMES,
    aggregate_loss,
    clipped_surrogate_loss,
    k3_kl,
    truncated_importance_weights,
    weighted_nll_loss,
)
from .registry import (
    ADVANTAGE_NAMES,
    ALGORITHM_NAMES,
    AdvantageEstimator,
    Algorithm,
    compute_advantages,
    get_advantage,
    get_algorithm,
    get_policy_loss,
    policy_loss_uses_ratio,
    register_advantage,
    register_algorithm,
    register_policy_loss,
)

__all__ = [
    "ADVANTAGE_NAMES",
    "AGGREGATION_MODES",
    "ALGORITHM_NAMES",
    "CLIP_METRIC_NAMES",
    "GPG_NORMS",
    "SCALE_REWARDS",
    "AdvantageEstimator",
    "AdvantageResult",
    "Algorithm",
    "GroupStats",
    "aapo",
    "aggregate_loss",
    "as_groups",
    "clipped_surrogate_loss",
    "combine_rewards",
    "compute_advantages",
    "dr_grpo",
    "get_advantage",
    "get_algorithm",
    "get_policy_loss",
    "gpg",
    "group_stats",
    "grpo",
    "k3_kl",
    "policy_loss_uses_ratio",
    "register_advantage",
    "register_algorithm",
    "register_policy_loss",
    "truncated_importance_weights",
    "weighted_nll_loss",
]
