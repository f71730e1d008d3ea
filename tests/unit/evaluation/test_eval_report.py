"""pass@1, its 95% interval and the tables, as worked examples checked by hand."""

from __future__ import annotations

import csv
import json

import pytest

from aapo.evaluation.report import (
    Z95,
    average,
    format_cell,
    level_table,
    load_results,
    render_report,
    results_table,
    score,
    score_to_dict,
    wilson_interval,
    write_csv,
    write_json,
)


def test_wilson_seven_of_ten_by_hand() -> None:
    # p = 0.7, n = 10, z² = 3.8415
    # denom  = 1 + z²/n = 1.38415
    # center = (0.7 + z²/(2n)) / denom = (0.7 + 0.19207) / 1.38415 = 0.64450
    # half   = z/denom · √(p(1-p)/n + z²/(4n²)) = 1.41601 · √(0.021 + 0.0096036) = 0.24772
    low, high = wilson_interval(7, 10)
    assert low == pytest.approx(0.39678, abs=1e-4)
    assert high == pytest.approx(0.89221, abs=1e-4)


def test_wilson_zero_of_thirty_keeps_a_width() -> None:
    # p = 0: center = (z²/60)/(1 + z²/30) = 0.064024/1.128048 = 0.056757 and half equals it,
    # so the interval is [0, 0.11351] (a Wald interval would be [0, 0]).
    assert wilson_interval(0, 30) == pytest.approx((0.0, 0.11351), abs=1e-4)


def test_k1_score_uses_wilson_on_the_problems() -> None:
    s = score([1, 0, 1, 1, 0, 1, 1, 0, 1, 1], k=1)
    assert (s.pass_at_1, s.num_correct, s.ci_method) == (0.7, 7, "wilson")
    assert (s.ci_low, s.ci_high) == pytest.approx(wilson_interval(7, 10))


def test_k2_score_is_a_normal_interval_over_problem_means() -> None:
    # 4 problems, k = 2, correct [2, 1, 0, 1] → per-problem means [1, .5, 0, .5], mean 0.5
    # sample variance = (.25 + 0 + .25 + 0) / 3 = 0.166667, s = 0.408248, SE = s/2 = 0.204124
    # interval = 0.5 ± 1.959964 · 0.204124 = 0.5 ± 0.400076 → [0.099924, 0.900076]
    s = score([2, 1, 0, 1], k=2)
    assert s.pass_at_1 == 0.5
    assert s.ci_method == "normal"
    assert s.std_error == pytest.approx(0.204124, abs=1e-6)
    assert (s.ci_low, s.ci_high) == pytest.approx((0.099924, 0.900076), abs=1e-6)
    assert s.num_correct == 4


def test_zero_spread_with_k_above_one_falls_back_to_wilson() -> None:
    s = score([0, 0, 0], k=4)  # the normal interval would be [0, 0]
    assert s.ci_method == "wilson"
    assert (s.ci_low, s.ci_high) == pytest.approx(wilson_interval(0, 3))


def test_normal_interval_is_clipped_to_unit_range() -> None:
    s = score([4, 4, 4, 3], k=4)
    assert s.ci_high == 1.0 and s.ci_low < s.pass_at_1


def test_average_combines_standard_errors() -> None:
    a, b = score([2, 1, 0, 1], k=2), score([2, 1, 1, 1], k=2)
    # b: means [1, .5, .5, .5], mean .625, s = 0.25, SE = 0.125
    # avg = (0.5 + 0.625)/2 = 0.5625, SE = √(0.204124² + 0.125²)/2 = 0.239357/2 = 0.119678
    avg = average([a, b])
    assert avg.pass_at_1 == 0.5625
    assert avg.std_error == pytest.approx(0.119678, abs=1e-6)
    assert avg.ci_low == pytest.approx(0.5625 - Z95 * 0.119678, abs=1e-5)
    assert avg.num_problems == 8


def test_average_of_wilson_intervals_keeps_their_width() -> None:
    # 0/3 twice: each Wilson interval is [0, 0.5615], half-width/z = 0.2808/1.96 = 0.14324;
    # SE_avg = √2 · 0.14324 / 2 = 0.10129, so Avg = 0 with [0, 0.1985] (not [0, 0])
    zero = score([0, 0, 0], k=1)
    avg = average([zero, zero])
    assert zero.ci_high == pytest.approx(0.56151, abs=1e-4)
    assert (avg.ci_low, avg.ci_high) == pytest.approx((0.0, 0.19853), abs=1e-4)


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(ValueError):
        score([], k=1)
    with pytest.raises(ValueError):
        score([3], k=2)
    with pytest.raises(ValueError):
        average([])


def _results(model: str, **benchmarks: list[int]) -> dict:
    scores = {name: score(counts, k=1) for name, counts in benchmarks.items()}
    return {
        "model": model,
        "num_samples": 1,
        "benchmarks": {name: score_to_dict(s) for name, s in scores.items()},
        "average": score_to_dict(average(list(scores.values()))) if len(scores) > 1 else None,
    }


def test_format_cell_is_percent_with_one_decimal() -> None:
    assert format_cell(score_to_dict(score([1] * 7 + [0] * 3, k=1))) == "70.0 [39.7, 89.2]"
    assert format_cell(None) == "–"


def test_table_one_layout_with_two_models() -> None:
    before = _results("base", aime24=[0, 0], math500=[1, 0])
    after = _results("trained", aime24=[1, 0], math500=[1, 1], minerva=[0])
    lines = results_table([before, after]).splitlines()
    assert lines[0] == "| Model | AIME24 | MATH-500 | Minerva | Avg |"
    assert lines[1] == "|---|---|---|---|---|"
    assert lines[2].startswith("| base | 0.0 [0.0, 65.8] | 50.0 [")
    assert "| – |" in lines[2]  # base has no Minerva column entry
    assert lines[3].startswith("| trained | 50.0 [")


def test_level_table_and_report_text() -> None:
    results = _results("m", synthetic=[1, 0, 1, 1])
    results["benchmarks"]["synthetic"]["levels"] = {
        "2": score_to_dict(score([1, 1], k=1)),
        "1": score_to_dict(score([1, 0], k=1)),
    }
    table = level_table([results], "synthetic")
    assert table is not None
    assert table.splitlines()[0] == "| Model | L1 | L2 | All |"
    assert level_table([results], "aime24") is None
    text = render_report([results])
    assert "| Model | Synthetic |" in text  # one benchmark: no Avg column
    assert "Synthetic by level" in text and "k=1" in text and "synthetic 4" in text


def test_json_and_csv_files(tmp_path) -> None:
    results = _results("m", aime24=[1, 0], math500=[1, 1])
    results["benchmarks"]["aime24"]["levels"] = {"1": score_to_dict(score([1], k=1))}
    write_json(results, tmp_path / "results.json")
    assert load_results(tmp_path) == json.loads((tmp_path / "results.json").read_text())
    write_csv(results, tmp_path / "results.csv")
    with (tmp_path / "results.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["benchmark"], r["level"]) for r in rows] == [
        ("aime24", ""), ("aime24", "1"), ("math500", ""), ("avg", ""),
    ]  # fmt: skip
    assert float(rows[2]["pass@1"]) == 1.0 and rows[0]["ci_method"] == "wilson"
    with pytest.raises(FileNotFoundError):
        load_results(tmp_path / "nowhere")
