"""Training data loading: malformed rows are reported with file and line."""

import hashlib
import json

import pytest

from aapo.data.datasets import (
    SYNTHETIC_TEST_SIZE,
    DatasetError,
    held_out_problems,
    load_problems,
)


def _write(path, lines):
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_jsonl_rows_load_with_extra_columns(tmp_path):
    path = _write(
        tmp_path / "d.jsonl", [json.dumps({"problem": "1+1?", "answer": "2", "level": 1})]
    )
    rows = load_problems(str(path))
    assert rows[0]["problem"] == "1+1?" and rows[0]["answer"] == "2" and rows[0]["level"] == 1
    assert rows[0]["_source"] == f"{path}:1"


def test_invalid_json_names_file_and_line(tmp_path):
    path = _write(tmp_path / "d.jsonl", [json.dumps({"problem": "a", "answer": "1"}), "{not json"])
    with pytest.raises(DatasetError, match=rf"{path}:2: not valid JSON"):
        load_problems(str(path))


def test_missing_answer_names_line_and_fields(tmp_path):
    path = _write(tmp_path / "d.jsonl", ["", json.dumps({"problem": "a", "gold": "1"})])
    with pytest.raises(
        DatasetError, match=rf"{path}:2: row has no an answer.*\['gold', 'problem'\]"
    ):
        load_problems(str(path))


def test_empty_problem_is_rejected(tmp_path):
    path = _write(tmp_path / "d.jsonl", [json.dumps({"problem": "  ", "answer": "1"})])
    with pytest.raises(DatasetError, match=":1: 'problem' must be a non-empty string"):
        load_problems(str(path))


def test_numeric_answer_becomes_text(tmp_path):
    path = _write(tmp_path / "d.jsonl", [json.dumps({"question": "q", "answer": 27.0})])
    assert load_problems(str(path))[0]["answer"] == "27.0"


def test_missing_file_and_unsupported_type(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        load_problems(str(tmp_path / "none.jsonl"))
    other = tmp_path / "d.csv"
    other.write_text("x")
    with pytest.raises(DatasetError, match="unsupported file type"):
        load_problems(str(other))


def test_synthetic_splits_are_disjoint():
    train = load_problems("synthetic", "train", seed=1, size=200)
    test = load_problems("synthetic", "test", seed=1, size=200)
    assert len(train) == 200 and not {r["problem"] for r in train} & {r["problem"] for r in test}
    with pytest.raises(DatasetError, match="splits 'train' and 'test'"):
        load_problems("synthetic", "validation")


# sha256 of json.dumps(rows) of the synthetic held-out split as it was when it held 500
# problems (seed → first 250, first 500), computed before the split grew to 1,500
HELD_OUT_500 = {
    42: ("6754b385d530f4c49142589bca56f2ea6e84dfd27cc90643192c0c396c981f13",
         "4207ba0268007b27bb8dd6ffedd1c3d0206275261a29c366ae35476cdea7e017"),
    1: ("cc076ab42417a0ae621441f3ca7f06fc96300af283a1d6e7a1e4a2787900ed71",
        "fac9498df1974a5df010cbc7d9fb7694c03f41cc867f32c87daecb33b7e8f68d"),
    3: ("d975c6b963e3826b7b1c711d62762dae4f815f78e26e5c758a5e102d430797e3",
        "64418374b9cbe592da74ad14775742db3e6c338b86a8cf7570cdf17c05b1636f"),
}  # fmt: skip


@pytest.mark.parametrize("seed", sorted(HELD_OUT_500))
def test_synthetic_held_out_split_grew_without_changing_its_first_500(seed: int) -> None:
    held_out = load_problems("synthetic", "test", seed=seed)
    assert len(held_out) == SYNTHETIC_TEST_SIZE == 1500

    def digest(rows: list[dict]) -> str:
        return hashlib.sha256(json.dumps(rows).encode()).hexdigest()

    # the default run's check (250) and any check up to 500 sees exactly the problems it saw
    assert (digest(held_out[:250]), digest(held_out[:500])) == HELD_OUT_500[seed]
    per_level = [sum(r["level"] == level for r in held_out) for level in range(1, 6)]
    assert per_level == [300] * 5
    assert [r["level"] for r in held_out[:1000]].count(1) == 200  # interleaved: balanced prefixes


@pytest.mark.parametrize("seed", sorted(HELD_OUT_500))
def test_the_trainers_held_out_check_sees_the_same_problems_as_before(seed: int) -> None:
    """held_out_problems draws only what it needs; over all levels it is the split's prefix."""
    digest = hashlib.sha256(json.dumps(held_out_problems(seed, 250)).encode()).hexdigest()
    assert digest == HELD_OUT_500[seed][0]
    assert held_out_problems(seed, 1000) == load_problems("synthetic", "test", seed=seed)[:1000]


def test_levels_restrict_both_synthetic_splits():
    train = load_problems("synthetic", "train", seed=1, size=300, levels=[1, 3])
    test = held_out_problems(1, 90, [1, 3])
    assert len(train) == 300 and {r["level"] for r in train} == {1, 3}
    assert [r["level"] for r in test[:4]] == [1, 3, 1, 3] and len(test) == 90
    # each level draws its own stream: the level-3 problems are those of all-level draws
    everything = held_out_problems(1, 225)
    assert [r for r in test if r["level"] == 3] == [r for r in everything if r["level"] == 3]
