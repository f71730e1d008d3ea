"""Reward functions by name: `get_reward_function("cosine", max_length=3584)`.

A name is a registered reward (`format`, `accuracy`, `cosine`, or one added with
`register_reward`) or an import path, `pkg.module:func` or `pkg.module.func`, so a reward
function written for TRL works unchanged. What is registered or imported is either a reward
callable (`f(prompts, completions, **kwargs)`; params become fixed keyword arguments) or a
class / factory whose instances are reward callables (params go to its constructor).

Left out: entry-point discovery of third-party rewards; an import path is enough.
"""

from __future__ import annotations

import functools
import importlib
import inspect
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

from aapo.messages import shown


@runtime_checkable
class RewardFunction(Protocol):
    """TRL's reward signature; None in the result means "does not apply to this row"."""

    def __call__(
        self, prompts: list[Any], completions: list[Any], **kwargs: Any
    ) -> list[float | None]: ...


_REGISTRY: dict[str, Any] = {}


def register_reward(name: str, target: Any = None) -> Any:
    """Register a reward callable or class under `name`; usable as a decorator."""

    def add(obj: Any) -> Any:
        if name in _REGISTRY and _REGISTRY[name] is not obj:
            raise ValueError(f"reward {shown(name)} is already registered")
        _REGISTRY[name] = obj
        return obj

    return add if target is None else add(target)


def registered_rewards() -> list[str]:
    return sorted(_REGISTRY)


def reward_parameters(name: str) -> set[str]:
    """Keyword parameters a reward takes at construction (a class) or call (a function), so a
    caller can fill run-level defaults (e.g. a length cap) only where they are accepted."""
    if name in _REGISTRY:
        target = _REGISTRY[name]
    elif ":" in name or "." in name:
        target = _import(name)
    else:
        raise ValueError(
            f"unknown reward {shown(name)}; registered: {', '.join(registered_rewards())}"
        )
    signature = inspect.signature(target.__init__ if inspect.isclass(target) else target)
    return set(signature.parameters) - {"self"}


def _import(path: str) -> Any:
    module_name, sep, attribute = path.partition(":")
    if not sep:
        module_name, _, attribute = path.rpartition(".")
    if not module_name or not attribute:
        raise ValueError(f"reward {shown(path)} is not a registered name or an import path")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in attribute.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as error:
        raise ValueError(f"cannot import reward {shown(path)}: {error}") from error
    return obj


def _instantiate(name: str, target: Any, params: dict[str, Any]) -> Callable[..., Any]:
    if inspect.isclass(target):
        try:
            return target(**params)
        except TypeError as error:
            raise ValueError(f"reward {shown(name)}: {error}") from error
    if not callable(target):
        raise ValueError(f"reward {shown(name)} resolves to {shown(target)}, which is not callable")
    if not params:
        return target
    bound = functools.partial(target, **params)
    functools.update_wrapper(bound, target)  # keeps __name__ for logging
    return bound


def get_reward_function(name: str, **params: Any) -> Callable[..., list[float | None]]:
    """The reward callable for a registered name or an import path (see the module doc).

    Unknown name: ValueError listing the registered names. Bad import path: ValueError naming it.
    """
    if name in _REGISTRY:
        return _instantiate(name, _REGISTRY[name], params)
    if ":" in name or "." in name:
        return _instantiate(name, _import(name), params)
    raise ValueError(f"unknown reward {shown(name)}; registered: {', '.join(registered_rewards())}")
