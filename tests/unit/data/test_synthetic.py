"""The synthetic task: determinism, disjoint splits, correct answers, levels as specified.

Answers are checked against the problem *text*, parsed independently of the generator (the
symbolic form through Python's `ast`, walked by hand, never evaluated; the word form by regex).
"""

from __future__ import annotations

import ast
import json
import re

import pytest

from aapo.data.synthetic import (
    LEVEL_SPECS,
    Problem,
    generate_problems,
    generate_structured,
    main,
    make_splits,
    parse_levels,
    split_of,
    write_splits,
)

_BINOPS = {ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b, ast.Mult: lambda a, b: a * b}


def _walk(node: ast.AST) -> tuple[int, list[int], int]:
    """(value, numbers in reading order, number of operations) of an arithmetic AST."""
    if isinstance(node, ast.Constant) and type(node.value) is int:
        return node.value, [node.value], 0
    if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
        left, lnums, lops = _walk(node.left)
        right, rnums, rops = _walk(node.right)
        return _BINOPS[type(node.op)](left, right), lnums + rnums, lops + rops + 1
    raise AssertionError(f"unexpected syntax: {ast.dump(node)}")


def solve_text(text: str) -> tuple[int, list[int], int]:
    """Recompute a problem's answer from its wording: (answer, numbers, operations)."""
    words = re.fullmatch(r"(?:Start with|Take) (\d+)(?:,| and) (.*)\. What (?:is|do).*", text)
    if words:
        value = int(words.group(1))
        steps = re.findall(r"(add|subtract|multiply by) (\d+)", words.group(2))
        numbers = [value]
        for verb, number in steps:
            x = int(number)
            value = value + x if verb == "add" else value - x if verb == "subtract" else value * x
            numbers.append(x)
        return value, numbers, len(steps)
    symbols = re.fullmatch(r"(?:What is |Compute |Evaluate )?([\d ()+*-]+?)(?: = )?[?.]", text)
    assert symbols, f"unrecognised problem text: {text!r}"
    return _walk(ast.parse(symbols.group(1), mode="eval").body)


def test_same_seed_same_rows_and_different_seed_different_rows() -> None:
    assert generate_problems(60, seed=3) == generate_problems(60, seed=3)
    assert make_splits(40, 20, seed=3) == make_splits(40, 20, seed=3)
    assert generate_problems(60, seed=3) != generate_problems(60, seed=4)


def test_known_rows_do_not_drift() -> None:
    # Pinned values: a change here means every saved split and the bundled model's report move.
    rows = generate_problems(5, seed=0)
    assert [r["level"] for r in rows] == [1, 2, 3, 4, 5]
    assert rows[0] == {
        "id": "L1-d79cea1f05af",
        "problem": "Compute 4 + 3.",
        "answer": "7",
        "level": 1,
    }
    assert rows[4]["problem"] == "What is (361 - 94) * 7 + 97?" and rows[4]["answer"] == "1966"


def test_larger_request_extends_smaller() -> None:
    small, large = generate_problems(10, seed=1), generate_problems(50, seed=1)
    assert small == large[:10]


def test_splits_are_disjoint_by_text() -> None:
    splits = make_splits(1500, 500, seed=0)
    train, test = splits["train"], splits["test"]
    assert len(train) == 1500 and len(test) == 500
    assert not {r["problem"] for r in train} & {r["problem"] for r in test}
    # A different seed's train set is still disjoint from this test set (sides fixed by hash).
    other = make_splits(1500, 10, seed=7)["train"]
    assert not {r["problem"] for r in other} & {r["problem"] for r in test}
    for split, rows in splits.items():
        assert len({r["problem"] for r in rows}) == len(rows)  # distinct within a split
        for p in generate_structured(200, seed=0, split=split):
            assert split_of(p.text) == split


@pytest.mark.parametrize("split", [None, "train", "test"])
def test_every_answer_is_correct(split: str | None) -> None:
    for row in generate_problems(1000, seed=11, split=split):
        answer, _, _ = solve_text(row["problem"])
        assert row["answer"] == str(answer), row
        assert answer >= 0


def test_levels_are_honoured() -> None:
    rows = generate_problems(500, seed=5, levels=(2, 5))
    assert {r["level"] for r in rows} == {2, 5}
    assert sum(r["level"] == 2 for r in rows) == 250
    for row in generate_problems(1000, seed=5):
        spec = LEVEL_SPECS[row["level"]]
        _, numbers, num_ops = solve_text(row["problem"])
        assert num_ops == spec.num_steps
        assert spec.start[0] <= numbers[0] <= spec.start[1]
        multipliers = [x for x in numbers[1:] if not spec.operand[0] <= x <= spec.operand[1]]
        assert len(multipliers) <= int(spec.multiply)
        assert all(2 <= x <= 9 for x in multipliers)
        assert ("*" in row["problem"] or "multiply" in row["problem"]) == spec.multiply


def test_solution_format() -> None:
    problem = generate_structured(4, seed=0, levels=(4,))[0]
    solution = problem.solution()
    assert re.fullmatch(r"<think> [^<]+ </think> <answer> \\boxed\{\d+\} </answer>", solution)
    assert solution.endswith(f"\\boxed{{{problem.answer}}} </answer>")


@pytest.mark.parametrize(
    ("start", "steps", "careful", "careless"),
    [
        (37, (("add", 48),), [85], [75]),  # 7+8=15: the 1 is not carried
        (52, (("sub", 17),), [35], [45]),  # 2-7: smaller from larger, 7-2=5; no borrow
        (37, (("mul", 4),), [148], [128]),  # 7*4=28 keeps 8; 3*4=12 leads, as written
        (995, (("add", 7),), [1002], [992]),  # carries out of two columns dropped
        (23, (("add", 14), ("sub", 5)), [37, 32], [37, 32]),  # no carry, no borrow: no slip
        (37, (("add", 48), ("sub", 17)), [85, 68], [75, 62]),  # 75-17: |5-7|=2, 7-1=6
    ],
)
def test_careless_arithmetic_hand_values(start, steps, careful, careless) -> None:
    problem = Problem(level=4, start=start, steps=steps, template=0)
    assert problem.values() == careful
    assert problem.slipped_values() == careless
    assert problem.slips == (careful[-1] != careless[-1])
    text = problem.solution(careless=True)
    assert text.endswith(f"\\boxed{{{careless[-1]}}} </answer>")
    op, x = steps[0]
    symbol = {"add": "+", "sub": "-", "mul": "*"}[op]
    assert f"<think> {start}{symbol}{x}={careless[0]}" in text  # the work shows the slip


def test_bad_arguments_raise() -> None:
    with pytest.raises(ValueError, match="level"):
        generate_problems(5, seed=0, levels=(9,))
    with pytest.raises(ValueError, match="split"):
        generate_problems(5, seed=0, split="dev")
    with pytest.raises(ValueError, match="distinct"):
        generate_problems(2000, seed=0, levels=(1,), split="test")  # level 1 is small


def test_write_splits_and_cli(tmp_path) -> None:
    paths = write_splits(tmp_path / "a", num_train=30, num_test=10, seed=2, levels=(1, 3))
    rows = [json.loads(line) for line in paths["train"].read_text().splitlines()]
    assert rows == make_splits(30, 10, seed=2, levels=(1, 3))["train"]
    assert set(rows[0]) == {"id", "problem", "answer", "level"}
    main(
        [
            str(tmp_path / "b"),
            "--num-train",
            "30",
            "--num-test",
            "10",
            "--seed",
            "2",
            "--levels",
            "1,3",
        ]
    )
    assert (tmp_path / "b" / "test.jsonl").read_text() == paths["test"].read_text()
    assert parse_levels("2-4") == (2, 3, 4)
