"""Prompt rows: typed, encoded once, long prompts counted out; the data order per epoch."""

import pytest

from aapo.config import ConfigError
from aapo.data.rows import epoch_order, prepare_rows
from aapo.models import load_tokenizer


def test_rows_are_typed_and_keep_dataset_columns():
    tokenizer = load_tokenizer("bundled")
    rows = [
        {"problem": "1 + 1", "answer": "2", "level": 1, "_source": "d.jsonl:1"},
        {"problem": "2 + 2", "answer": "4", "level": 2, "_source": "d.jsonl:2"},
    ]
    prepared, skipped = prepare_rows(rows, tokenizer, None, "plain", 512)
    assert skipped == 0
    assert [r.index for r in prepared] == [0, 1]
    assert prepared[1].columns == {"problem": "2 + 2", "answer": "4", "level": 2}
    assert prepared[1].source == "d.jsonl:2" and prepared[1].problem == "2 + 2"
    assert prepared[0].prompt_ids and all(isinstance(t, int) for t in prepared[0].prompt_ids)


def test_long_prompts_are_counted_out_and_all_long_is_an_error():
    tokenizer = load_tokenizer("bundled")
    rows = [{"problem": "1 + 1", "answer": "2"}, {"problem": "9 " * 400, "answer": "9"}]
    prepared, skipped = prepare_rows(rows, tokenizer, None, "plain", 64)
    assert (len(prepared), skipped) == (1, 1)
    shortest = len(prepared[0].prompt_ids)
    with pytest.raises(ConfigError) as info:  # was a bare ValueError: a traceback in the CLI
        prepare_rows(rows, tokenizer, None, "plain", 2)
    assert "every prompt is longer than max_prompt_length=2 tokens" in str(info.value)
    assert f"raise max_prompt_length to at least {shortest}" in str(info.value)


def test_epoch_order_is_a_seeded_permutation():
    first = epoch_order(10, seed=3, epoch=0)
    assert sorted(first) == list(range(10))
    assert epoch_order(10, seed=3, epoch=0) == first
    assert epoch_order(10, seed=3, epoch=1) != first
    assert epoch_order(10, seed=4, epoch=0) != first
