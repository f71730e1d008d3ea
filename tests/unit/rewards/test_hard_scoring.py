"""RewardScorer: failures become counted NaNs, bad results raise by name, hung workers die."""

import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from aapo.rewards.errors import RewardReturnError
from aapo.rewards.reward_process import ProcessReward, RewardWorkerError
from aapo.rewards.scoring import RewardScorer

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "integration"))  # rewards_for_tests

COMPLETIONS = ["a", "bb", "ccc"]


def _score(scorer, columns=None):
    return scorer.score(["p"] * 3, COMPLETIONS, [[1], [2], [3]], columns or {"answer": ["1"] * 3})


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_raising_function_is_counted_and_scores_nan():
    def broken(prompts, completions, **kwargs):
        raise RuntimeError("boom")

    def fine(prompts, completions, **kwargs):
        return [1.0, 0.0, 0.5]

    scorer = RewardScorer(["broken", "fine"], [broken, fine])
    out = _score(scorer)
    assert out.shape == (2, 3) and out.dtype == torch.float32
    assert torch.isnan(out[0]).all()
    assert out[1].tolist() == [1.0, 0.0, 0.5]
    assert scorer.pop_metrics() == {"rewards/broken/errors": 1.0}
    assert scorer.pop_metrics() == {}  # popped


def test_a_slow_in_process_function_is_counted_as_timeout_and_not_waited_for():
    def slow(prompts, completions, **kwargs):
        time.sleep(30)
        return [1.0] * len(completions)

    scorer = RewardScorer(["slow"], [slow], timeout=0.2)
    started = time.monotonic()
    out = _score(scorer)
    assert time.monotonic() - started < 5
    assert torch.isnan(out).all()
    assert scorer.pop_metrics() == {"rewards/slow/timeouts": 1.0}


def test_none_and_nan_mean_not_applicable():
    scorer = RewardScorer(["f"], [lambda prompts, completions, **kw: [None, math.nan, 2]])
    out = _score(scorer)[0]
    assert math.isnan(out[0]) and math.isnan(out[1]) and out[2].item() == 2.0
    assert scorer.pop_metrics() == {}  # not an error


@pytest.mark.parametrize(
    "result, message",
    [
        ([1.0, 2.0], r"'short' returned 2 scores for 3 completions: \[1.0, 2.0\]; expected"),
        (np.ones((3, 1)), r"'short' returned an array of shape \(3, 1\); expected a list of 3"),
        ([[1.0], [2.0], [3.0]], r"'short' returned \[1.0\] \(list\) for completion 0; expected"),
        ("abc", r"'short' returned a str 'abc'; expected a list of 3 numbers or None"),
        (None, r"'short' returned None; expected a list of 3 numbers or None"),
        ((x for x in [1.0, 2.0, 3.0]), r"'short' returned a generator <generator object"),
        ([1.0, "x", 2.0], r"'short' returned 'x' \(str\) for completion 1; expected"),
        ([True, 1.0, 1.0], r"'short' returned True \(bool\) for completion 0"),
        ([1.0, math.inf, 1.0], r"'short' returned inf for completion 1; expected"),
        ([1.0, 1.0, -(10**400)], r"'short' returned -1000000000.* for completion 2"),
    ],
)  # fmt: skip
def test_a_wrong_result_raises_naming_the_function(result, message):
    scorer = RewardScorer(["short"], [lambda prompts, completions, **kw: result])
    with pytest.raises(RewardReturnError, match=message):
        _score(scorer)


@pytest.mark.parametrize("value", [1e308, -3.5e38, np.float64(1e300)])
def test_a_finite_score_beyond_float32_is_refused_as_written_not_as_inf(value):
    """Scores are kept in float32, where these are inf: the message used to say "inf"."""
    scorer = RewardScorer(["huge"], [lambda prompts, completions, **kw: [0.0, value, 0.0]])
    with pytest.raises(RewardReturnError) as info:
        _score(scorer)
    message = str(info.value)
    assert f"'huge' returned {float(value)!r} for completion 1" in message
    assert "inf" not in message.replace("finite", "")
    assert "within float32's ±3.4e+38" in message


def test_none_for_every_completion_is_not_applicable_not_an_error():
    scorer = RewardScorer(["skip"], [lambda prompts, completions, **kw: [None] * 3])
    assert torch.isnan(_score(scorer)).all()


@pytest.mark.parametrize(
    "result",
    [
        [np.float32(0.5), np.float64(1.0), np.int64(2)],
        np.array([0.5, 1.0, 2.0], dtype=np.float32),
        torch.tensor([0.5, 1.0, 2.0]),
        [torch.tensor(0.5), 1, 2.0],
    ],
)
def test_numpy_and_torch_scores_are_accepted(result):
    scorer = RewardScorer(["np"], [lambda prompts, completions, **kw: result])
    assert _score(scorer)[0].tolist() == [0.5, 1.0, 2.0]


def test_every_column_reaches_the_function():
    seen = {}

    def spy(prompts, completions, **kwargs):
        seen.update(kwargs)
        return [0.0] * len(completions)

    columns = {"answer": ["1"] * 3, "rendered_prompt": ["<s>p"] * 3, "level": [1, 2, 3]}
    _score(RewardScorer(["spy"], [spy]), columns)
    assert set(seen) == {"completion_ids", "answer", "rendered_prompt", "level"}
    assert seen["level"] == [1, 2, 3] and seen["completion_ids"] == [[1], [2], [3]]


def test_import_path_rewards_run_in_a_worker_with_columns_and_metrics():
    specs = ["rewards_for_tests:answer_length", "rewards_for_tests:Stateful",
             "rewards_for_tests:numpy_scores", "rewards_for_tests:print_and_score"]  # fmt: skip
    kwargs = {"rewards_for_tests:Stateful": {"value": 3.0}}
    with RewardScorer.from_specs(specs, kwargs, timeout=30) as scorer:
        assert [type(f).__name__ for f in scorer.functions] == ["ProcessReward"] * 4
        columns = {"answer": ["1", "22", "333"], "rendered_prompt": ["x"] * 3}
        out = _score(scorer, columns)
        assert out.tolist() == [[101.0, 102.0, 103.0], [3.0] * 3, [1.0] * 3, [0.5] * 3]
        assert scorer.pop_metrics() == {"rewards/Stateful/calls": 1}
        assert scorer.names == ["answer_length", "Stateful", "numpy_scores", "print_and_score"]


def test_built_in_rewards_stay_in_process():
    scorer = RewardScorer.from_specs(["format"], timeout=30)
    assert type(scorer.functions[0]).__name__ == "FormatReward"
    assert _score(scorer).tolist() == [[0.0, 0.0, 0.0]]
    scorer.close()


def test_a_bad_import_path_is_refused_when_the_scorer_is_built():
    with pytest.raises(RewardWorkerError, match=r"rewards_for_tests:no_such_reward.*no_such"):
        RewardScorer.from_specs(["format", "rewards_for_tests:no_such_reward"])


def test_a_hanging_worker_is_killed_at_the_timeout_and_replaced():
    scorer = RewardScorer.from_specs(["rewards_for_tests:hang_forever"], timeout=1.0)
    first = scorer.functions[0].pid
    started = time.monotonic()
    out = _score(scorer)
    assert time.monotonic() - started < 1.0 + 3.0  # timeout + a small margin
    assert torch.isnan(out).all()
    assert scorer.pop_metrics() == {"rewards/hang_forever/timeouts": 1.0}
    assert not _alive(first)  # killed, not left running
    second = scorer.functions[0].pid
    assert second is not None and second != first and _alive(second)  # the next call's worker
    scorer.close()
    assert not _alive(second) and scorer.functions[0].pid is None


def test_a_worker_that_died_is_counted_as_error_and_the_next_call_gets_a_new_one():
    scorer = RewardScorer.from_specs(["rewards_for_tests:boxed_one"], timeout=30)
    scorer.functions[0]._proc.kill()  # as an out-of-memory killer would
    assert torch.isnan(_score(scorer)).all()
    assert scorer.pop_metrics() == {"rewards/boxed_one/errors": 1.0}
    assert _score(scorer).tolist() == [[0.0, 0.0, 0.0]]
    scorer.close()


def test_a_name_registered_only_in_this_process_runs_here_with_a_warning(caplog):
    from aapo.rewards import register_reward

    register_reward("hard_test_local_reward", lambda prompts, completions, **kw: [2.0] * 3)
    scorer = RewardScorer.from_specs(["hard_test_local_reward"], timeout=30)
    assert not isinstance(scorer.functions[0], ProcessReward)
    assert "runs in this process, where a hung call cannot be killed" in caplog.text
    assert _score(scorer).tolist() == [[2.0, 2.0, 2.0]]


def test_a_plug_in_name_runs_in_a_worker_that_imports_the_plug_in():
    import importlib

    importlib.import_module("rewards_for_tests")  # the trainer imports `imports` first
    scorer = RewardScorer.from_specs(
        ["hard_plugin_boxed_one"], timeout=30, imports=["rewards_for_tests"]
    )
    assert isinstance(scorer.functions[0], ProcessReward)
    assert _score(scorer).tolist() == [[0.0, 0.0, 0.0]]
    scorer.close()


def test_rewards_with_the_same_short_name_get_distinct_metric_names():
    """`accuracy` and `mine:accuracy` both logged rewards/accuracy/mean, one over the other."""
    from aapo.rewards.scoring import metric_names

    assert metric_names(["accuracy", "mine:accuracy", "format"]) == [
        "accuracy",
        "accuracy_2",
        "format",
    ]
    # a suffixed name never takes another reward's own short name
    assert metric_names(["a:acc", "b.acc", "c:acc_2"]) == ["acc", "acc_3", "acc_2"]
