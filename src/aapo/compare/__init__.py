"""Comparing algorithms honestly: seeds × variants of `aapo train`, then statistics
over seeds, the paper's figures and a Markdown report.

variants.py names what is compared; runner.py runs the matrix; runs.py reads run directories;
stats.py holds the statistics; plots.py and report.py present them; commands.py is what the
`aapo compare` and `aapo plot` commands call.
"""

from aapo.compare.commands import compare, plot, write_outputs
from aapo.compare.variants import CompareError, Variant, get_variant, register_variant

__all__ = [
    "CompareError",
    "Variant",
    "compare",
    "get_variant",
    "plot",
    "register_variant",
    "write_outputs",
]
