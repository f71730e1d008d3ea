"""The grader: worker processes, hard timeouts, caching, crashes, pathological and hostile input."""

from __future__ import annotations

import logging
import os
import signal
import threading
import time

import pytest

from aapo.rewards import GoldAnswerError, Grader, Verdict, check_gold, configure_default_grader


def test_verdicts_and_statuses(grader: Grader) -> None:
    verdicts = grader.grade(["\\boxed{0.5}", "\\boxed{2}", "nothing"], ["\\frac{1}{2}"] * 3)
    assert verdicts == [
        Verdict(True, "0.5", "ok"),
        Verdict(False, "2", "ok"),
        Verdict(False, None, "no_answer"),
    ]
    with pytest.raises(ValueError, match="gold"):
        grader.grade(["\\boxed{1}"], [])


def test_cache_and_deduplication(grader: Grader) -> None:
    before = grader.counts["requests"]
    completions = ["\\boxed{3/4}", "<answer>\\boxed{3/4}</answer>", "\\boxed{3/4}", "\\boxed{0.7}"]
    first = grader.grade(completions, ["0.75"] * 4)
    assert [v.correct for v in first] == [True, True, True, False]
    assert grader.counts["requests"] - before == 2  # one per distinct (answer, gold)
    assert grader.grade(completions, ["0.75"] * 4) == first
    assert grader.counts["requests"] - before == 2  # the second call is served from the cache


def test_usable_off_the_main_thread(grader: Grader) -> None:
    results: list[list[Verdict]] = []
    thread = threading.Thread(target=lambda: results.append(grader.grade(["\\boxed{9}"], ["9"])))
    thread.start()
    thread.join(timeout=60)
    assert results and results[0][0].correct


def test_soft_timeout_keeps_the_worker(fast_grader: Grader) -> None:
    fast_grader.grade(["\\boxed{1}"], ["1"])  # started and warm
    restarts = fast_grader.counts["restarts"]
    started = time.monotonic()
    [verdict] = fast_grader.grade(["\\boxed{9^{9^{9^{9^{9}}}}}"], ["1"])
    assert verdict.status == "timeout" and not verdict.correct
    assert time.monotonic() - started < 1.0 + 0.5
    assert fast_grader.counts["restarts"] == restarts
    assert fast_grader.grade(["\\boxed{2}"], ["2"])[0].correct  # still serving


def test_batch_timeout_caps_a_whole_call(fast_grader: Grader) -> None:
    fast_grader.grade(["\\boxed{1}"], ["1"])  # started and warm
    towers = [f"\\boxed{{{n}^{{{n}^{{{n}^{{{n}^{{{n}}}}}}}}}}}" for n in (17, 18, 19)]
    fast_grader.batch_timeout = 0.5
    try:
        started = time.monotonic()
        verdicts = fast_grader.grade(towers, ["1"] * 3)
        elapsed = time.monotonic() - started
    finally:
        fast_grader.batch_timeout = None
    assert [v.status for v in verdicts] == ["timeout"] * 3
    assert elapsed < 1.0 + 0.5  # the first tower's own deadline; the others never started
    before = fast_grader.counts["requests"]
    fast_grader.grade(towers[2:], ["1"])  # not cached: it was never graded
    assert fast_grader.counts["requests"] == before + 1


def test_hard_timeout_kills_and_replaces_the_worker() -> None:
    # With the worker's own deadline out of reach, only the parent's kill can stop it.
    with Grader(timeout=1.0, soft_timeout=60.0) as hard:
        hard.grade(["\\boxed{1}"], ["1"])  # started and warm
        started = time.monotonic()
        verdicts = hard.grade(["\\boxed{9^{9^{9^{9^{9}}}}}", "\\boxed{7}"], ["1", "7"])
        assert [v.status for v in verdicts] == ["timeout", "ok"]
        assert verdicts[1].correct
        assert hard.counts["restarts"] == 1
        assert time.monotonic() - started < 30  # 1 s deadline + a fresh worker's start-up


def test_dead_worker_is_replaced(grader: Grader) -> None:
    grader.grade(["\\boxed{1}"], ["1"])
    os.kill(grader._pool.workers[0].proc.pid, signal.SIGKILL)
    grader._pool.workers[0].proc.wait()
    assert grader.grade(["\\boxed{5}"], ["5"])[0] == Verdict(True, "5", "ok")


PATHOLOGICAL = [
    "x" * 2_000_000,  # huge, no answer
    "y" * 2_000_000 + "\\boxed{12}",  # huge, with a (wrong) answer at the end
    "\\boxed{" + "{" * 900 + "1" + "}" * 900 + "}",  # deeply nested braces
    "\\boxed{" + "{" * 5000 + "1" + "}" * 5000 + "}",  # more than any answer is long
    "\\boxed{" * 10_000,
    "\\boxed{9^{9^{9^{9^{9}}}}}",  # towers of exponents
    "<answer>9^9^9^9^9</answer>",
    "<answer>the answer is 9**9**9**9</answer>",
    "\\boxed{10^{10^{10^{10}}}}",
    "\\boxed{100000000!}",
    "\\boxed{\\sum_{k=1}^{10^{12}} k^{k}}",
    "\\boxed{\\x\\y\\z \\u1234 \\\\\\}",  # invalid escapes
    "\\boxed{\\frac{1}{0}}",
    "\\boxed{\x00\x01\x02}",
    "\\boxed{\ud800}",  # a lone surrogate
    "",
    "\\boxed{}",
    "<answer></answer>",
    "\\boxed{" + "1+" * 900 + "1}",
]


def test_pathological_inputs_score_zero_in_time(fast_grader: Grader) -> None:
    started = time.monotonic()
    verdicts = fast_grader.grade(PATHOLOGICAL, ["13"] * len(PATHOLOGICAL))
    elapsed = time.monotonic() - started
    assert not any(v.correct for v in verdicts)
    assert {v.status for v in verdicts} <= {"ok", "no_answer", "timeout", "error"}
    timeouts = sum(v.status == "timeout" for v in verdicts)
    # each pair gets at most the 1 s timeout; a restart costs a few seconds more
    assert elapsed < 3.0 + 1.0 * timeouts + 10.0 * fast_grader.counts["restarts"]


def hostile_completions(marker: str) -> list[str]:
    touch = f"__import__('os').system('touch {marker}')"
    return [
        f"\\boxed{{{touch}}}",
        f"<answer>{touch}</answer>",
        f"<answer>$ {touch} $</answer>",
        f"<answer>answer: {touch}</answer>",
        f"\\boxed{{exec(\"open('{marker}', 'w')\")}}",
        f"\\boxed{{eval(\"__import__('os').system('touch {marker}')\")}}",
        f"\\boxed{{().__class__.__bases__[0].__subclasses__()}} {touch}",
        f"\\boxed{{lambda: open('{marker}', 'w')}}",
        f"<answer>import os; os.system('touch {marker}')</answer>",
        f"\\boxed{{\\text{{{touch}}}}}",
        f"\\boxed{{\\operatorname{{system}}('touch {marker}')}}",
        f"\\boxed{{Symbol('x').__class__.__init__.__globals__['os'].system('touch {marker}')}}",
    ]


def test_code_in_model_output_is_never_executed(grader: Grader, tmp_path) -> None:
    marker = tmp_path / "pwned"
    completions = hostile_completions(str(marker))
    verdicts = grader.grade(completions, ["1"] * len(completions))
    assert not any(v.correct for v in verdicts)
    assert not marker.exists()
    # gold side too: a gold is data, and data is never run either
    grader.grade(["\\boxed{1}"], [f"__import__('os').system('touch {marker}')"])
    assert not marker.exists()


def test_check_golds(grader: Grader) -> None:
    good = [
        "\\frac{14}{3}",
        "204_5",
        "3.83e35",
        "-1./3",
        "np.arcsin(10/13)",
        "69, 84",
        "x \\in [1,2)",
    ]
    assert grader.check_golds(good) == [None] * len(good)
    errors = grader.check_golds(["\\frac{1}{", "", None, "   "])
    assert all(isinstance(e, GoldAnswerError) for e in errors)
    assert "\\\\frac{1}{" in str(errors[0])  # the message names the value
    with pytest.raises(GoldAnswerError) as error:
        grader.check_gold("\\frac{1}{")
    assert error.value.answer == "\\frac{1}{"
    assert isinstance(error.value, ValueError)


def test_unparseable_gold_at_grading_time_is_an_error(grader: Grader, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="aapo.rewards.grading"):
        [verdict] = grader.grade(["\\boxed{1}"], ["\\frac{1}{"])
    assert verdict == Verdict(False, "1", "error")
    assert "cannot be parsed" in caplog.text


def test_module_level_check_gold_uses_the_default_grader() -> None:
    configure_default_grader(timeout=20.0)
    try:
        check_gold("\\left( 3, \\frac{\\pi}{2} \\right)")
        with pytest.raises(GoldAnswerError, match="unbalanced"):
            check_gold("\\sqrt{2")
    finally:
        configure_default_grader()  # back to the defaults; stops the worker


def test_invalid_settings() -> None:
    with pytest.raises(ValueError):
        Grader(timeout=0)
    with pytest.raises(ValueError):
        Grader(num_workers=0)
