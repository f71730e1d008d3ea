"""Scores from graded samples: pass@1 as the mean over k samples, its 95% interval, and the
paper's Table 1 as Markdown, plus `results.json` and `results.csv`.

pass@1 = (1/n) Σ_i c_i / k, with c_i the correct samples among k for problem i. The interval:
- k = 1: each problem is one Bernoulli draw, so the Wilson score interval on c/n. Unlike the
  normal ("Wald") interval it stays inside [0, 1] and keeps a width at 0/30 or 30/30.
- k > 1: the per-problem means p_i are averaged, so a normal interval over them,
  mean ± z·s/√n (s = sample std, ddof 1), clipped to [0, 1]. It counts both the spread of
  difficulty across problems and the sampling noise within each. When s = 0 (every problem
  scored the same, e.g. all 0) or n = 1 it would claim certainty, so Wilson on the problems'
  mean is used instead (conservative: it ignores the extra samples).
- Avg (unweighted mean of the run's benchmarks, as in Table 1): normal interval with them
  taken as independent, SE_avg = √(Σ SE_b²)/m. SE_b is s_b/√n_b where the benchmark's
  interval is normal, and the Wilson interval's half-width / z where it is Wilson, so a
  benchmark scored 0/30 adds its real uncertainty instead of none.
The results of one evaluation (`build_results`, `finish`) are assembled here for both kinds of
run, sampled (harness.py) and graded from a file (external.py).
Left out: pass@k for k > 1 (the paper reports pass@1 only), bootstrap intervals.
Fractions are stored in [0, 1]; tables print them ×100 with one decimal.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from statistics import NormalDist
from typing import TYPE_CHECKING, Any

from aapo.config import ConfigError
from aapo.files import atomic_write, read_json_object
from aapo.models import BUNDLED

if TYPE_CHECKING:  # types only: assembling results reads what these produced
    from aapo.evaluation.benchmarks import Benchmark
    from aapo.evaluation.config import EvalConfig
    from aapo.evaluation.store import SampleStore
    from aapo.rewards import Grader

Z95 = NormalDist().inv_cdf(0.975)  # 1.959964...

DISPLAY_NAMES = {
    "aime24": "AIME24",
    "math500": "MATH-500",
    "amc23": "AMC23",
    "minerva": "Minerva",
    "olympiadbench": "OlympiadBench",
    "synthetic": "Synthetic",
}


@dataclass
class Score:
    """pass@1 of one benchmark (or one level of it) with its 95% interval."""

    pass_at_1: float
    ci_low: float
    ci_high: float
    ci_method: str  # "wilson" or "normal"
    std_error: float  # of the mean over problems (0 for n = 1)
    num_problems: int
    num_samples: int  # k
    num_correct: int  # over all n·k samples


def wilson_interval(successes: float, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a proportion successes/n."""
    if n <= 0:
        raise ValueError("the Wilson interval needs n >= 1")
    p = successes / n
    denom = 1 + z * z / n
    center = (p + z * z / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, center - half), min(1.0, center + half)


def sample_std(values: Sequence[float]) -> float:
    """Unbiased sample standard deviation (ddof 1); 0 for fewer than two values."""
    if len(values) < 2:
        return 0.0
    mean = sum(values) / len(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def score(correct_counts: Sequence[int], k: int) -> Score:
    """Score of n problems, each with `correct_counts[i]` correct samples out of k."""
    n = len(correct_counts)
    if n == 0:
        raise ValueError("cannot score a benchmark with no problems")
    if any(not 0 <= c <= k for c in correct_counts):
        raise ValueError(f"correct counts must lie in [0, {k}], got {list(correct_counts)}")
    per_problem = [c / k for c in correct_counts]
    mean = sum(per_problem) / n
    std_error = sample_std(per_problem) / math.sqrt(n)
    if k == 1 or std_error == 0.0:
        low, high = wilson_interval(mean * n, n)
        method = "wilson"
    else:
        low, high = max(0.0, mean - Z95 * std_error), min(1.0, mean + Z95 * std_error)
        method = "normal"
    return Score(mean, low, high, method, std_error, n, k, int(sum(correct_counts)))


def average(scores: Sequence[Score]) -> Score:
    """Unweighted mean of benchmark scores with a normal interval (benchmarks independent)."""
    if not scores:
        raise ValueError("cannot average zero benchmarks")
    m = len(scores)
    mean = sum(s.pass_at_1 for s in scores) / m
    std_error = math.sqrt(sum(_interval_se(s) ** 2 for s in scores)) / m
    low, high = max(0.0, mean - Z95 * std_error), min(1.0, mean + Z95 * std_error)
    return Score(
        mean,
        low,
        high,
        "normal",
        std_error,
        sum(s.num_problems for s in scores),
        scores[0].num_samples,
        sum(s.num_correct for s in scores),
    )


def _interval_se(s: Score) -> float:
    """The standard error a benchmark's interval stands for (see the module docstring)."""
    return s.std_error if s.ci_method == "normal" else (s.ci_high - s.ci_low) / (2 * Z95)


def score_to_dict(s: Score) -> dict[str, Any]:
    out = asdict(s)
    out["pass@1"] = out.pop("pass_at_1")
    out["ci95"] = [out.pop("ci_low"), out.pop("ci_high")]
    return out


def score_from_dict(d: dict[str, Any]) -> Score:
    return Score(
        d["pass@1"],
        d["ci95"][0],
        d["ci95"][1],
        d["ci_method"],
        d["std_error"],
        d["num_problems"],
        d["num_samples"],
        d["num_correct"],
    )


# ---- tables ----------------------------------------------------------------------------------


def format_cell(d: dict[str, Any] | None) -> str:
    """`12.3 [8.0, 17.9]`: pass@1 and its 95% interval, ×100, one decimal."""
    if d is None:
        return "–"
    low, high = d["ci95"]
    return f"{100 * d['pass@1']:.1f} [{100 * low:.1f}, {100 * high:.1f}]"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def results_table(all_results: Sequence[dict[str, Any]]) -> str:
    """Table 1: a row per model, a column per benchmark (union, in first-seen order) and Avg."""
    names: list[str] = []
    for results in all_results:
        names += [b for b in results["benchmarks"] if b not in names]
    with_avg = len(names) > 1
    header = ["Model", *(DISPLAY_NAMES.get(b, b) for b in names)] + (["Avg"] if with_avg else [])
    rows = []
    for results in all_results:
        row = [results["model"]] + [format_cell(results["benchmarks"].get(b)) for b in names]
        if with_avg:
            row.append(format_cell(results.get("average")))
        rows.append(row)
    return markdown_table(header, rows)


def level_table(all_results: Sequence[dict[str, Any]], benchmark: str) -> str | None:
    """Per-level pass@1 of one benchmark (rows: models; columns: levels, then All)."""
    have = [r for r in all_results if r["benchmarks"].get(benchmark, {}).get("levels")]
    if not have:
        return None
    levels = sorted({lvl for r in have for lvl in r["benchmarks"][benchmark]["levels"]}, key=_key)
    header = ["Model", *(f"L{lvl}" for lvl in levels), "All"]
    rows = []
    for results in have:
        entry = results["benchmarks"][benchmark]
        cells = [format_cell(entry["levels"].get(lvl)) for lvl in levels]
        rows.append([results["model"], *cells, format_cell(entry)])
    return markdown_table(header, rows)


def _key(level: str) -> tuple[int, Any]:
    return (0, int(level)) if level.lstrip("-").isdigit() else (1, level)


def render_report(all_results: Sequence[dict[str, Any]]) -> str:
    """The text printed after an evaluation: Table 1, then per-level tables, then a legend."""
    current = all_results[-1]
    parts = [results_table(all_results)]
    for name in current["benchmarks"]:
        table = level_table(all_results, name)
        if table is not None:
            parts.append(f"{DISPLAY_NAMES.get(name, name)} by level:\n\n{table}")
    sizes = ", ".join(f"{b} {e['num_problems']}" for b, e in current["benchmarks"].items())
    ks = {e["num_samples"] for e in current["benchmarks"].values()}
    if len(ks) == 1:
        over = f"k={ks.pop()} sample(s)"
    else:  # a completions file may give each benchmark its own k
        each = ", ".join(f"{b} {e['num_samples']}" for b, e in current["benchmarks"].items())
        over = f"k ({each}) samples"
    parts.append(f"pass@1 ×100, mean over {over} per problem, [95% interval]. Problems: {sizes}.")
    return "\n\n".join(parts)


# ---- files -----------------------------------------------------------------------------------


def load_results(path: str | Path) -> dict[str, Any]:
    """An earlier `results.json`, given the file or the output folder that holds it."""
    path = Path(path)
    if path.is_dir():
        path = path / "results.json"
    if not path.exists():
        raise FileNotFoundError(f"no results file at {path} (give a results.json or its folder)")
    results = read_json_object(path, ConfigError, " (an aapo eval's results)")
    for name, kind in (("model", str), ("benchmarks", dict)):
        if not isinstance(results.get(name), kind):
            raise ConfigError(
                f"{path}: field {name!r} must be a {'string' if kind is str else 'mapping'}, "
                f"got {type(results.get(name)).__name__}"
            )
    return results


def write_json(results: dict[str, Any], path: Path) -> None:
    text = json.dumps(results, indent=2, ensure_ascii=False) + "\n"
    atomic_write(path, text.encode("utf-8"))


CSV_FIELDS = [
    "model", "benchmark", "level", "pass@1", "ci95_low", "ci95_high", "ci_method",
    "num_problems", "num_samples", "num_correct",
]  # fmt: skip


def write_csv(results: dict[str, Any], path: Path) -> None:
    """One row per benchmark, per level of a benchmark (level column set), and Avg."""
    rows = []
    for name, entry in results["benchmarks"].items():
        rows.append(_csv_row(results["model"], name, "", entry))
        for level, sub in sorted(entry.get("levels", {}).items(), key=lambda kv: _key(kv[0])):
            rows.append(_csv_row(results["model"], name, level, sub))
    if results.get("average"):
        rows.append(_csv_row(results["model"], "avg", "", results["average"]))
    handle = io.StringIO(newline="")
    writer = csv.DictWriter(handle, fieldnames=CSV_FIELDS)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write(path, handle.getvalue().encode("utf-8"))


def _csv_row(model: str, benchmark: str, level: str, d: dict[str, Any]) -> dict[str, Any]:
    return {
        "model": model,
        "benchmark": benchmark,
        "level": level,
        "pass@1": d["pass@1"],
        "ci95_low": d["ci95"][0],
        "ci95_high": d["ci95"][1],
        "ci_method": d["ci_method"],
        "num_problems": d["num_problems"],
        "num_samples": d["num_samples"],
        "num_correct": d["num_correct"],
    }


# assembling an evaluation's results ------------------------------------------------------


def build_results(
    benchmarks: list[Benchmark], store: SampleStore, k: int | dict[str, int]
) -> dict[str, Any]:
    """Scores per benchmark (and per level where rows have one) and their average. `k` is one
    for every benchmark, or k by benchmark name (completions files may differ by benchmark)."""
    entries, scores = {}, []
    for bench in benchmarks:
        kb = k if isinstance(k, int) else k[bench.name]
        rows = {item.id: [store.records[(bench.name, item.id, j)] for j in range(kb)]
                for item in bench.items}  # fmt: skip
        correct = {item_id: sum(r["correct"] for r in recs) for item_id, recs in rows.items()}
        overall = score(list(correct.values()), kb)
        scores.append(overall)
        flat = [r for recs in rows.values() for r in recs]
        entry = score_to_dict(overall)
        entry.update(
            source=bench.source,
            skipped_rows=bench.skipped,
            statuses=dict(Counter(r["status"] for r in flat)),
            truncated=sum(bool(r["truncated"]) for r in flat),
            mean_completion_tokens=mean_tokens(flat),
        )
        levels: dict[str, list[int]] = {}
        for item in bench.items:
            if item.level is not None:
                levels.setdefault(item.level, []).append(correct[item.id])
        if levels:
            entry["levels"] = {lvl: score_to_dict(score(c, kb)) for lvl, c in levels.items()}
        entries[bench.name] = entry
    mean = score_to_dict(average(scores)) if len(scores) > 1 else None
    return {"benchmarks": entries, "average": mean}


def mean_tokens(records: list[dict[str, Any]]) -> float | None:
    """Mean completion length over the records that know it (a completions file may not)."""
    known = [r["completion_tokens"] for r in records if r["completion_tokens"] is not None]
    return round(sum(known) / len(known), 1) if known else None


def finish(
    results: dict[str, Any],
    config: EvalConfig,
    grader: Grader,
    output_dir: Path,
    fingerprint: dict[str, Any],
    started: float,
    compared: list[dict],
    **fields: Any,
) -> dict[str, Any]:
    """Add what every evaluation records (`fields` first: what this kind of run adds), write
    the files and print the table; → the results."""
    results.update(
        **fields,
        grader=dict(grader.counts),
        output_dir=str(output_dir),
        config=asdict(config),
        fingerprint=fingerprint,
        elapsed_s=round(time.monotonic() - started, 2),
    )
    write_outputs(results, output_dir, compared)
    return results


def write_outputs(results: dict[str, Any], output_dir: Path, compared: list[dict]) -> None:
    """results.json and results.csv beside samples.jsonl, and Table 1 on stdout."""
    write_json(results, output_dir / "results.json")
    write_csv(results, output_dir / "results.csv")
    print(render_report([*compared, results]))
    print(f"\nwritten: {output_dir}/results.json, results.csv, samples.jsonl")


def model_label(model: str) -> str:
    return "tiny-math-lm (bundled)" if model in ("", BUNDLED) else model


def slug(text: str) -> str:
    """A folder name from a model label: `runs/aapo/final` → `runs-aapo-final`."""
    return re.sub(r"[^A-Za-z0-9._]+", "-", text).strip("-") or "model"
