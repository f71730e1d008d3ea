"""Files shipped inside the package: the tiny math model and its tokenizer.

`TINY_MODEL_DIR` is a plain directory in the installed package, so `from_pretrained` loads it
offline like any local checkpoint. `scripts/build_tiny_model.py` rebuilds it from nothing and
writes `build_report.json` (per-level accuracy as measured) beside the weights. Left out: any
hub download or cache; a zipped install (the directory must exist on disk).
"""

from __future__ import annotations

from pathlib import Path

TINY_MODEL_DIR: Path = Path(__file__).resolve().parent / "tiny-math-lm"

__all__ = ["TINY_MODEL_DIR"]
