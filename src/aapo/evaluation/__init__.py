"""Evaluation: pass@1 over k samples on math benchmarks, as in the paper's Table 1.

    from aapo.evaluation import EvalConfig, run_eval
    results = run_eval(EvalConfig(model="runs/aapo/final", benchmarks=["math500"], limit=50))

`benchmarks` loads and validates problems, `harness` samples, grades (with the training
grader) and resumes, `report` scores (mean over k samples, 95% interval) and writes tables.
"""

from aapo.evaluation.benchmarks import Benchmark, Item, load_benchmark
from aapo.evaluation.config import PAPER_BENCHMARKS, EvalConfig
from aapo.evaluation.harness import run_eval
from aapo.evaluation.report import Score, average, render_report, score, wilson_interval

__all__ = [
    "PAPER_BENCHMARKS",
    "Benchmark",
    "EvalConfig",
    "Item",
    "Score",
    "average",
    "load_benchmark",
    "render_report",
    "run_eval",
    "score",
    "wilson_interval",
]
