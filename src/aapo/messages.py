"""How an error message quotes a value a user gave (a config value, a dataset cell, a model's
completion, what a reward returned, a field read back from a file): `shown(value)`, its repr
cut to `SHOWN_CHARS` characters with the full length said, so a 50 kB completion or a
million-element list never floods a terminal and the message stays readable. One helper for
every module; only the standard library, so any layer can use it.
"""

from __future__ import annotations

from typing import Any

SHOWN_CHARS = 200  # a value quoted in an error is cut to this many characters


def shown(value: Any) -> str:
    """`repr(value)`, cut to SHOWN_CHARS characters with the full length, for error messages."""
    text = repr(value)
    if len(text) <= SHOWN_CHARS:
        return text
    return f"{text[:SHOWN_CHARS]}... ({len(str(value))} characters)"
