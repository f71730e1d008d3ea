"""Each reward function is called once before any model loads, on real rows and stand-in
completions, through the same call as training: a wrong return stops the run there."""

import math
import re
import textwrap

import pytest

from aapo.data.datasets import load_problems
from aapo.data.rows import prepare_rows
from aapo.models import load_tokenizer
from aapo.rewards.errors import RewardReturnError
from aapo.rewards.scoring import RewardScorer
from aapo.training import builders
from aapo.training.config import TrainConfig
from aapo.training.scored import PROBE_ROWS, probe

STAND_INS = 3  # per probed row: a boxed gold, an empty completion, one cut at the cap


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer("bundled")


@pytest.fixture(scope="module")
def rows(tokenizer):
    raw = load_problems("synthetic", "train", 42, 8)
    return prepare_rows(raw, tokenizer, None, "plain", 512)[0]


def test_the_probe_calls_with_real_columns_and_stand_in_completions(rows, tokenizer):
    seen = {}

    def spy(prompts, completions, **kwargs):
        seen.update(kwargs, prompts=prompts, completions=completions)
        return [0.0] * len(completions)

    probe(RewardScorer(["spy"], [spy]), rows, tokenizer)
    golds = [row.columns["answer"] for row in rows[:PROBE_ROWS]]
    assert seen["answer"] == [gold for gold in golds for _ in range(STAND_INS)]
    assert seen["prompts"][0] == rows[0].problem
    assert seen["rendered_prompt"][0] == rows[0].rendered_prompt
    assert f"\\boxed{{{golds[0]}}}" in seen["completions"][0] and seen["completions"][1] == ""
    ends = [ids[-1:] for ids in seen["completion_ids"][:STAND_INS]]
    assert ends[:2] == [[tokenizer.eos_token_id]] * 2 and ends[2] != [tokenizer.eos_token_id]


def _returning(make):
    """A reward function returning `make(completions)`."""
    return lambda prompts, completions, **kwargs: make(completions)


WRONG_RETURNS = {
    "too many": (_returning(lambda c: [1.0] * 8), r"returned 8 scores for 6 completions"),
    "strings": (_returning(lambda c: ["1"] * len(c)), r"returned '1' \(str\) for completion 0"),
    "bools": (_returning(lambda c: [True] * len(c)), r"returned True \(bool\) for completion 0"),
    "inf": (_returning(lambda c: [math.inf] * len(c)), r"returned inf for completion 0"),
    "2-D": (_returning(lambda c: [[1.0]] * len(c)), r"returned \[1.0\] \(list\) for completion"),
    "generator": (_returning(lambda c: (1.0 for _ in c)), r"returned a generator"),
    "1e308": (_returning(lambda c: [1e308] * len(c)), r"returned 1e\+308 for completion 0"),
    "dict": (_returning(lambda c: {"score": 1.0}), r"returned a dict \{'score': 1.0\}"),
}


@pytest.mark.parametrize("case", WRONG_RETURNS)
def test_a_wrong_return_stops_the_trainer_before_the_weights_load(tmp_path, monkeypatch, case):
    """Each of these aborted the first training step with a traceback, after the weights loaded
    and a generation batch was sampled."""
    from aapo.training import trainer

    def must_not_load(*args, **kwargs):
        raise AssertionError("the weights were loaded before the reward was checked")

    monkeypatch.setattr(builders, "load_model", must_not_load)
    function, message = WRONG_RETURNS[case]
    config = TrainConfig(output_dir=str(tmp_path / "run"), report_to=[], dataset_size=64)
    with pytest.raises(RewardReturnError) as info:
        trainer.Trainer(config, reward_functions={"mine": function})
    text = str(info.value)
    assert text.startswith("reward function 'mine' returned") and re.search(message, text)
    n = PROBE_ROWS * STAND_INS
    assert f"expected a list of {n} numbers or None, one per completion" in text
    assert "found before any model loaded, by one call on stand-in completions for row" in text


def test_none_only_and_raising_rewards_pass_the_probe_without_counting(rows, tokenizer, caplog):
    def not_applicable(prompts, completions, **kwargs):
        return [None] * len(completions)

    def raises(prompts, completions, **kwargs):
        raise KeyError("a column this reward expected")

    scorer = RewardScorer(["none", "raises"], [not_applicable, raises])
    probe(scorer, rows, tokenizer)
    assert "'raises' raised KeyError" in caplog.text
    assert scorer.pop_metrics() == {}  # the first step's counts start from zero


def test_an_import_path_reward_returning_a_generator_is_refused(
    rows, tokenizer, tmp_path, monkeypatch
):
    """A worker cannot send a generator back ("bad"): the same one-line refusal."""
    (tmp_path / "probe_rewards_for_tests.py").write_text(
        textwrap.dedent(
            """
            def lazy(prompts, completions, **kwargs):
                return (1.0 for _ in completions)
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    refused = pytest.raises(RewardReturnError, match=r"'lazy' returned a value that cannot be")
    with RewardScorer.from_specs(["probe_rewards_for_tests:lazy"]) as scorer, refused:
        probe(scorer, rows, tokenizer)
