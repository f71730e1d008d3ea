"""Name lists derived from TrainConfig's field declarations fail closed: a field nobody
thought about is fingerprinted, refused on resume, and must declare its range."""

import dataclasses
import typing
from dataclasses import dataclass

import pytest

from aapo.data.datasets import load_problems
from aapo.data.rows import prepare_rows
from aapo.models import load_tokenizer, resolve_model_path
from aapo.training import checkpoint as ckpt
from aapo.training.config import TrainConfig
from aapo.training.fields import (
    AT_LEAST_ONE,
    Range,
    _doc,
    derived_reference_entries,
    reference_fields,
    resumable_fields,
)
from aapo.training.reference.cache import (
    ABSENT_WHEN_EMPTY,
    SAMPLED_ONLY,
    ReferenceCache,
    ReferenceCacheError,
    run_fingerprint,
)


@dataclass
class WithNewKnobs(TrainConfig):
    """TrainConfig plus fields added without thinking about caches or resumes."""

    new_knob: int = _doc(3, "A new sampling option nobody classified.", range=AT_LEAST_ONE)
    new_logging_knob: int = _doc(
        1, "Only changes what is printed.", reference=False, resume=True, range=AT_LEAST_ONE
    )


@pytest.fixture(scope="module")
def rows_and_tokenizer():
    tokenizer = load_tokenizer(resolve_model_path("bundled"))
    config = TrainConfig(dataset_size=8)
    raw = load_problems("synthetic", "train", config.seed, config.dataset_size)
    rows, _ = prepare_rows(raw, tokenizer, None, "plain", config.max_prompt_length)
    return rows, tokenizer


def _fingerprint(config, rows_and_tokenizer):
    rows, tokenizer = rows_and_tokenizer
    return run_fingerprint(config, rows, tokenizer, [tokenizer.eos_token_id])


def test_a_new_field_is_fingerprinted_unless_it_says_otherwise(rows_and_tokenizer):
    fingerprint = _fingerprint(WithNewKnobs(dataset_size=8), rows_and_tokenizer)
    assert fingerprint["new_knob"] == 3
    assert "new_logging_knob" not in fingerprint
    changed = _fingerprint(WithNewKnobs(dataset_size=8, new_knob=4), rows_and_tokenizer)
    assert changed["new_knob"] == 4


def test_a_cache_built_with_another_value_of_a_new_field_is_refused_naming_it(
    tmp_path, rows_and_tokenizer
):
    from aapo.training.reference.cache import Layout, shard_name, write_manifest

    stored = _fingerprint(WithNewKnobs(dataset_size=8), rows_and_tokenizer)
    layout = Layout(num_rows=1, rows_per_shard=1, draws=1)
    (tmp_path / shard_name(0)).write_bytes(b"")  # never read: the fingerprint fails first
    source = {"file": "x", "sha256": "0" * 64, "not_checked": "the weights"}
    write_manifest(tmp_path, stored, layout, ["format", "accuracy"], {}, source=source)
    wanted = _fingerprint(WithNewKnobs(dataset_size=8, new_knob=5), rows_and_tokenizer)
    with pytest.raises(ReferenceCacheError, match=r"new_knob: cache 3, run 5"):
        ReferenceCache.open(tmp_path, wanted)


def test_the_fingerprint_holds_what_shapes_the_reference_and_nothing_else(rows_and_tokenizer):
    fingerprint = _fingerprint(TrainConfig(dataset_size=8), rows_and_tokenizer)
    by_value = set(reference_fields(TrainConfig)) - set(SAMPLED_ONLY)
    assert by_value <= set(fingerprint)
    for name in ("temperature", "top_p", "num_generations", "reward_funcs", "imports"):
        assert name in fingerprint
    # the sampler draws from the same distribution with another random stream; optimisation
    # settings never reach the reference
    for name in ("sampler", "learning_rate", "algorithm", "beta", "output_dir"):
        assert name not in fingerprint
    # every derived entry a field names is computed (or sampled-only: weights, seed, dtype, or
    # left out while empty, and computed when set)
    with_examples = _fingerprint(
        TrainConfig(dataset_size=8, prompt_examples="boxed_arithmetic"), rows_and_tokenizer
    )
    for entry in derived_reference_entries(TrainConfig):
        assert entry in fingerprint or entry in SAMPLED_ONLY or entry in ABSENT_WHEN_EMPTY, entry
    assert set(ABSENT_WHEN_EMPTY) <= set(with_examples) - set(fingerprint)
    assert {"dtype", "reference_weights", "seed"} == set(SAMPLED_ONLY)


def test_a_new_field_is_refused_on_resume_unless_it_says_otherwise():
    saved = dataclasses.asdict(WithNewKnobs())
    assert ckpt.trajectory_config_differences(saved, {**saved, "new_knob": 4}) == [
        "new_knob: 3 → 4"
    ]
    assert "new_logging_knob" not in resumable_fields(TrainConfig)  # declared on the subclass
    assert "output_dir" in resumable_fields(TrainConfig)
    assert "learning_rate" not in resumable_fields(TrainConfig)


def test_every_numeric_field_declares_its_range():
    hints = typing.get_type_hints(TrainConfig)
    numeric = {int, float}
    for f in dataclasses.fields(TrainConfig):
        kinds = {hints[f.name]} | set(typing.get_args(hints[f.name]))
        if kinds & numeric and bool not in kinds:
            assert isinstance(f.metadata.get("range"), Range), f"{f.name} declares no range"


def test_ranges_are_checked_from_the_declaration():
    with pytest.raises(ValueError, match=r"new_knob must be >= 1, got 0"):
        WithNewKnobs(new_knob=0)
    with pytest.raises(ValueError, match=r"delta_low must be finite, got nan"):
        TrainConfig(delta_low=float("nan"))
    assert str(Range(0, 1, low_open=True)) == "in (0, 1]"
    assert str(Range(0, 1, high_open=True)) == "in [0, 1)"
    assert Range(1).holds(None)  # optional fields may be null
