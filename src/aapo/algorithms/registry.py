"""Name registries: advantage estimators, policy losses, and the algorithm presets built on them.

The trainer never branches on an algorithm's name: it looks the parts up here. Adding an
estimator takes one small function and one registration line, and it can then be picked by
name like the built-ins:

    >>> import torch
    >>> from aapo.algorithms import AdvantageResult, Algorithm, compute_advantages
    >>> from aapo.algorithms import get_algorithm, register_advantage, register_algorithm
    >>> @register_advantage("rloo")
    ... def rloo(rewards, *, valid=None):
    ...     # leave-one-out baseline: each completion against the mean of the other G - 1
    ...     g = rewards.shape[1]
    ...     baseline = (rewards.sum(dim=1, keepdim=True) - rewards) / (g - 1)  # [B, G]
    ...     return AdvantageResult(rewards - baseline, metrics={})
    >>> compute_advantages("rloo", torch.tensor([[1.0, 0.0, 0.0, 0.0]])).advantages
    tensor([[ 1.0000, -0.3333, -0.3333, -0.3333]])
    >>> register_algorithm("rloo", Algorithm("rloo", policy_loss="nll", aggregation="token_mean"))
    >>> get_algorithm("rloo").needs_reference
    False

An estimator names, as keyword arguments, the options it reads (`valid`, `ref_rewards`,
`ref_valid`, `eps`, `scale_rewards`, ...); `compute_advantages` hands it only those, so one
config dict serves every estimator. It also zeroes the advantage of invalid completions, so an
estimator that ignores `valid` still honours that contract.

Left out: the estimators and losses themselves (advantages.py, losses.py) and configuration
(config.py applies an Algorithm's `defaults`).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import torch
from torch import Tensor

from .advantages import AdvantageResult, aapo, check_rewards, check_valid, dr_grpo, gpg, grpo
from .losses import AGGREGATION_MODES, clipped_policy_loss, nll_policy_loss

Estimator = Callable[..., AdvantageResult]
PolicyLoss = Callable[..., tuple[Tensor, dict[str, Tensor]]]


@dataclass(frozen=True)
class AdvantageEstimator:
    """A registered estimator: the function and what it needs."""

    name: str
    fn: Estimator
    needs_reference: bool
    accepts: frozenset[str] | None  # keyword options it names; None = it takes **kwargs


@dataclass(frozen=True)
class Algorithm:
    """A preset: which estimator, policy loss and aggregation, and the config it changes."""

    advantage: str
    policy_loss: str
    aggregation: str
    defaults: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # read-only, so a preset cannot be edited by whoever looked it up
        object.__setattr__(self, "defaults", MappingProxyType(dict(self.defaults)))

    @property
    def needs_reference(self) -> bool:
        """Whether the estimator compares against reference completions (AAPO)."""
        return get_advantage(self.advantage).needs_reference


_ADVANTAGES: dict[str, AdvantageEstimator] = {}
_POLICY_LOSSES: dict[str, PolicyLoss] = {}
_USES_RATIO: dict[str, bool] = {}
_ALGORITHMS: dict[str, Algorithm] = {}

# live views: they include whatever a user registers later
ADVANTAGE_NAMES = _ADVANTAGES.keys()
ALGORITHM_NAMES = _ALGORITHMS.keys()


def _add(table: dict[str, Any], kind: str, name: str, entry: Any) -> None:
    if not isinstance(name, str) or not name:
        raise ValueError(f"a {kind} name must be a non-empty string, got {name!r}")
    if name in table:
        raise ValueError(f"{kind} {name!r} is already registered")
    table[name] = entry


def _lookup(table: dict[str, Any], kind: str, name: str) -> Any:
    if name not in table:
        raise ValueError(f"unknown {kind} {name!r}; known: {', '.join(sorted(table))}")
    return table[name]


def _keyword_names(fn: Callable[..., Any]) -> frozenset[str] | None:
    params = inspect.signature(fn).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    keyword = (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return frozenset(p.name for p in params if p.kind in keyword)


def register_advantage(
    name: str, *, needs_reference: bool = False
) -> Callable[[Estimator], Estimator]:
    """Decorator: register `fn(rewards [B, G], *, <options>) -> AdvantageResult` as `name`."""

    def decorator(fn: Estimator) -> Estimator:
        entry = AdvantageEstimator(name, fn, needs_reference, _keyword_names(fn))
        _add(_ADVANTAGES, "advantage estimator", name, entry)
        return fn

    return decorator


def get_advantage(name: str) -> AdvantageEstimator:
    return _lookup(_ADVANTAGES, "advantage estimator", name)


def compute_advantages(
    name: str,
    rewards: Tensor,
    *,
    valid: Tensor | None = None,
    ref_rewards: Tensor | None = None,
    ref_valid: Tensor | None = None,
    **options: Any,
) -> AdvantageResult:
    """Run estimator `name` on `rewards` [B, G], passing only the options it accepts."""
    estimator = get_advantage(name)
    if estimator.needs_reference and ref_rewards is None:
        raise ValueError(
            f"advantage estimator {name!r} compares against reference completions: "
            "pass ref_rewards (the rewards of the reference model's samples)"
        )
    rewards = check_rewards(rewards)
    valid = check_valid(valid, rewards)
    offered = {"valid": valid, "ref_rewards": ref_rewards, "ref_valid": ref_valid, **options}
    if estimator.accepts is not None:
        offered = {k: v for k, v in offered.items() if k in estimator.accepts}
    result = estimator.fn(rewards, **offered)
    return _checked(name, result, rewards, valid)


def _checked(name: str, result: Any, rewards: Tensor, valid: Tensor) -> AdvantageResult:
    """Hold a (possibly user-written) estimator to the contract."""
    if not isinstance(result, AdvantageResult):
        raise TypeError(f"estimator {name!r} returned {type(result).__name__}, not AdvantageResult")
    if result.advantages.shape != rewards.shape:
        raise ValueError(
            f"estimator {name!r} returned advantages of shape {tuple(result.advantages.shape)} "
            f"for rewards {tuple(rewards.shape)}"
        )
    if not torch.isfinite(result.advantages).all():
        raise ValueError(f"estimator {name!r} returned NaN or inf advantages")
    advantages = torch.where(valid, result.advantages, 0.0)  # [B, G]
    return AdvantageResult(advantages, dict(result.metrics))


def register_policy_loss(
    name: str, *, uses_ratio: bool = False
) -> Callable[[PolicyLoss], PolicyLoss]:
    """Decorator: register `fn(logps, *, advantages, old_logps, epsilon_low, epsilon_high)
    -> (per_token [n, T], metric masks)` as `name`. `uses_ratio`: the loss reads `old_logps`,
    so updates after the first on a generation batch need the sampling policy's log-probs."""

    def decorator(fn: PolicyLoss) -> PolicyLoss:
        _add(_POLICY_LOSSES, "policy loss", name, fn)
        _USES_RATIO[name] = uses_ratio
        return fn

    return decorator


def policy_loss_uses_ratio(name: str) -> bool:
    get_policy_loss(name)
    return _USES_RATIO[name]


def get_policy_loss(name: str) -> PolicyLoss:
    return _lookup(_POLICY_LOSSES, "policy loss", name)


def register_algorithm(name: str, algorithm: Algorithm) -> None:
    """Register a preset; its estimator and loss must already be registered."""
    if not isinstance(algorithm, Algorithm):
        raise TypeError(f"expected an Algorithm, got {type(algorithm).__name__}")
    get_advantage(algorithm.advantage)
    get_policy_loss(algorithm.policy_loss)
    if algorithm.aggregation not in AGGREGATION_MODES:
        raise ValueError(
            f"aggregation must be one of {AGGREGATION_MODES}, got {algorithm.aggregation!r}"
        )
    _add(_ALGORITHMS, "algorithm", name, algorithm)


def get_algorithm(name: str) -> Algorithm:
    return _lookup(_ALGORITHMS, "algorithm", name)


# The built-ins register exactly as a user's additions would.
register_advantage("grpo")(grpo)
register_advantage("dr_grpo")(dr_grpo)
register_advantage("gpg")(gpg)
register_advantage("aapo", needs_reference=True)(aapo)
register_policy_loss("nll")(nll_policy_loss)
register_policy_loss("clipped", uses_ratio=True)(clipped_policy_loss)
register_algorithm("aapo", Algorithm("aapo", "nll", "token_mean"))
register_algorithm("gpg", Algorithm("gpg", "nll", "token_mean"))
register_algorithm("grpo", Algorithm("grpo", "clipped", "sequence_mean"))
register_algorithm(
    "dapo",
    Algorithm("grpo", "clipped", "token_mean", {"epsilon_high": 0.28, "dynamic_sampling": True}),
)
register_algorithm("dr_grpo", Algorithm("dr_grpo", "clipped", "constant"))
