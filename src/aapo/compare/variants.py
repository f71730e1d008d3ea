"""Named variants for `aapo compare`: an algorithm plus config overrides.

Every registered algorithm is a variant of itself (`aapo`, `grpo`, `gpg`, ... and any a plug-in
registers); `aapo_noclip` is AAPO with `momentum_clip: false`, the paper's "w/o clip" ablation
(Table 2). More can be registered with `register_variant`. A plain run directory is matched back
to a variant by `infer_variant`, so `aapo plot` groups ablation runs apart from their algorithm.

Left out: running the variants (runner.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from aapo.algorithms import ALGORITHM_NAMES
from aapo.config import ConfigError
from aapo.messages import shown

# keys a variant may not set: the runner sets them for every job
RUNNER_KEYS = ("algorithm", "seed", "output_dir", "resume_from_checkpoint", "overwrite_output_dir")


class CompareError(ConfigError):
    """Bad input to `aapo compare` or `aapo plot`; the message names the culprit."""


@dataclass(frozen=True)
class Variant:
    """What one column of a comparison trains: `algorithm` with `overrides` on top of the
    shared config."""

    name: str
    algorithm: str
    overrides: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "overrides", MappingProxyType(dict(self.overrides)))


_VARIANTS: dict[str, Variant] = {}


def register_variant(name: str, algorithm: str, **overrides: Any) -> Variant:
    """Register `name` = `algorithm` with config `overrides` (checked when a run is planned)."""
    if not name or name in _VARIANTS:
        raise ValueError(f"variant name {name!r} is empty or already registered")
    runner_set = sorted(set(overrides) & set(RUNNER_KEYS))
    if runner_set:
        raise ValueError(f"variant {name!r} sets {runner_set}, which the runner sets per job")
    variant = Variant(name, algorithm, overrides)
    _VARIANTS[name] = variant
    return variant


def variant_names() -> list[str]:
    """Every name `get_variant` accepts: registered algorithms and named variants."""
    return sorted(set(ALGORITHM_NAMES) | set(_VARIANTS))


def get_variant(name: str) -> Variant:
    if name in _VARIANTS:
        return _VARIANTS[name]
    if name in ALGORITHM_NAMES:
        return Variant(name, name)
    known = ", ".join(variant_names())
    raise CompareError(f"unknown algorithm or variant {shown(name)}; known: {known}")


def parse_variants(text: str) -> list[Variant]:
    """`aapo,grpo,aapo_noclip` → variants, in order; empty or repeated names are errors."""
    names = [part.strip() for part in text.split(",")]
    if not all(names):
        raise CompareError(f"--algorithms {shown(text)}: empty name in the comma-separated list")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise CompareError(f"--algorithms {shown(text)} names {', '.join(repeated)} more than once")
    return [get_variant(name) for name in names]


def infer_variant(config: Mapping[str, Any]) -> str:
    """The variant a run's config is: the named variant of its algorithm whose overrides all
    hold (the most specific one), else the algorithm itself."""
    algorithm = str(config.get("algorithm", "unknown"))
    matches = [
        v
        for v in _VARIANTS.values()
        if v.algorithm == algorithm
        and all(config.get(k) == value for k, value in v.overrides.items())
    ]
    if not matches:
        return algorithm
    return max(matches, key=lambda v: len(v.overrides)).name


register_variant("aapo_noclip", "aapo", momentum_clip=False)
