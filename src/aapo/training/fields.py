"""How a config field declares itself, and the name lists derived from the declarations.

A field is declared with `_doc(default, help, reference=, resume=, range=, follows=)`: its
help text, whether it shapes AAPO's reference rollouts (and so a reference cache's
fingerprint), whether a resumed run may change it, the values it may take (`Range`), and the
list field it follows. `reference_fields`, `derived_reference_entries` and `resumable_fields`
read those declarations back, failing closed: a field that says nothing is fingerprinted and
refused on resume. The meaning of each key is in training/config.py's docstring.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Range:
    """The values a numeric field may take: bounds, each closed unless said open; None
    (for optional fields) always passes, floats must be finite, and a list's every item must
    hold."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    why: str = ""  # shown after the bounds in the error

    def holds(self, value: Any) -> bool:
        if value is None:
            return True
        if isinstance(value, (list, tuple)):
            return all(self.holds(item) for item in value)
        if isinstance(value, float) and not math.isfinite(value):
            return False
        above = self.low is None or (value > self.low if self.low_open else value >= self.low)
        below = self.high is None or (value < self.high if self.high_open else value <= self.high)
        return above and below

    def __str__(self) -> str:
        if self.low is not None and self.high is not None:
            text = "in {}{}, {}{}".format(
                "(" if self.low_open else "[", _num(self.low), _num(self.high),
                ")" if self.high_open else "]",
            )  # fmt: skip
        elif self.low is not None:
            text = f"{'>' if self.low_open else '>='} {_num(self.low)}"
        elif self.high is not None:
            text = f"{'<' if self.high_open else '<='} {_num(self.high)}"
        else:
            text = "finite"
        return f"{text} {self.why}" if self.why else text


ANY = Range()  # any finite value: declared, so the field is not forgotten
POSITIVE = Range(0, low_open=True)
NON_NEGATIVE = Range(0)
AT_LEAST_ONE = Range(1)
FRACTION = Range(0, 1)
# a token count: above any model's context, so a typo (1e12) is refused before anything is
# sized from it; the model's own context length is checked before its weights load
TOKENS = Range(1, 2**20, why="(tokens)")


# where things are written or shown, the held-out check: no effect on the reference or the
# trajectory, so a resumed run may change them
BOOKKEEPING: dict[str, Any] = {"reference": False, "resume": True}


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _doc(
    default: Any,
    text: str,
    *,
    reference: bool | str = True,
    resume: bool = False,
    range: Range | None = None,
    follows: str | None = None,
) -> Any:
    """A field with its help text and what it means to the rest of aapo (module docstring)."""
    metadata = {"help": text, "reference": reference, "resume": resume, "range": range,
                "follows": follows}  # fmt: skip
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=metadata)
    return field(default=default, metadata=metadata)


def reference_fields(config_type: type) -> list[str]:
    """Fields fingerprinted by value in a reference cache (`reference=True`, the default)."""
    return [f.name for f in dataclasses.fields(config_type) if f.metadata.get("reference", True)
            is True]  # fmt: skip


def derived_reference_entries(config_type: type) -> dict[str, list[str]]:
    """Fingerprint entries derived from fields, by entry: `{"dataset": ["dataset_name", ...]}`."""
    out: dict[str, list[str]] = {}
    for f in dataclasses.fields(config_type):
        entry = f.metadata.get("reference", True)
        if isinstance(entry, str):
            out.setdefault(entry, []).append(f.name)
    return out


def resumable_fields(config_type: type) -> frozenset[str]:
    """Fields a resumed run may change (`resume=True`); every other one is refused."""
    return frozenset(f.name for f in dataclasses.fields(config_type) if f.metadata.get("resume"))
