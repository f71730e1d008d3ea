"""A synthetic arithmetic task with difficulty levels, for CPU-sized RL runs, tests and benchmarks.

Every problem is a left-to-right chain: a start number and 1-3 steps (add, subtract, multiply by
a single digit), written either in symbols ("What is (37 + 48) * 2?") or in words ("Start with
37, then add 48, then multiply by 2. What is the result?"). Levels grow in digits and steps:

| level | start    | + / − operand | steps | multiply |
|-------|----------|---------------|-------|----------|
| 1     | 1-20     | 1-9           | 1     | no       |
| 2     | 21-99    | 1-9           | 1     | no       |
| 3     | 10-99    | 10-99         | 1     | no       |
| 4     | 10-99    | 10-99         | 2     | no       |
| 5     | 100-999  | 10-99         | 3     | one step |

Answers are non-negative integers (a subtraction never exceeds the running value).

Splits. Each problem text belongs to one side, `train` (70%), `valid` (10%) or `test` (20%), by
a SHA-256 of the text, so every train set (any seed, any size) is disjoint from every test set,
not just the two returned by one call. Sides are by wording, not by arithmetic: levels 1-3 are
small tables (324, 1,422 and 12,195 distinct chains, six wordings each) that a warm-up of a few
thousand steps largely covers, so the same sum can sit on both sides in other words; from level 4
on there are millions of chains and a test problem's arithmetic is almost surely new. Within one
split, texts are distinct. A level's rows come from `random.Random(f"{seed}/{split}/{level}")`,
so a larger request extends a smaller one (the first k rows of a level do not depend on the total).

Careless arithmetic. `Problem.slipped_values` is what a solver gets who drops every carry and
borrow, the two commonest bugs of children's column arithmetic ("forgot to carry"; "smaller from
larger": 52 - 17 = 45): 37 + 48 = 75, 52 - 17 = 45, 37 * 4 = 128. The bundled model is warmed
up on a mix of careful and careless solutions (scripts/build_tiny_model.py), so it makes these
slips by habit while the careful answer stays within reach of sampling: headroom that RL with a
verifier can recover, as it recovers a skill a real model has but does not use reliably.

Left out: division, negative numbers, problems that need operator precedence beyond the one
pair of parentheses the symbolic form uses to keep left-to-right order.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from aapo.messages import shown

LEVELS: tuple[int, ...] = (1, 2, 3, 4, 5)
SPLITS: tuple[str, ...] = ("train", "valid", "test")


@dataclass(frozen=True)
class LevelSpec:
    """How problems of one level are drawn."""

    start: tuple[int, int]  # inclusive range of the first number
    operand: tuple[int, int]  # inclusive range of an added or subtracted number
    num_steps: int
    multiply: bool  # one of the steps is "multiply by 2-9"


LEVEL_SPECS: dict[int, LevelSpec] = {
    1: LevelSpec(start=(1, 20), operand=(1, 9), num_steps=1, multiply=False),
    2: LevelSpec(start=(21, 99), operand=(1, 9), num_steps=1, multiply=False),
    3: LevelSpec(start=(10, 99), operand=(10, 99), num_steps=1, multiply=False),
    4: LevelSpec(start=(10, 99), operand=(10, 99), num_steps=2, multiply=False),
    5: LevelSpec(start=(100, 999), operand=(10, 99), num_steps=3, multiply=True),
}

_SYMBOLS = {"add": "+", "sub": "-", "mul": "*"}
_VERBS = {"add": "add {}", "sub": "subtract {}", "mul": "multiply by {}"}
_SYMBOLIC_TEMPLATES = ("What is {expr}?", "Compute {expr}.", "Evaluate {expr}.", "{expr} = ?")
_WORD_TEMPLATES = (
    "Start with {start}, then {steps}. What is the result?",
    "Take {start} and {steps}. What do you get?",
)
NUM_TEMPLATES = len(_SYMBOLIC_TEMPLATES) + len(_WORD_TEMPLATES)


def _digits_add(a: int, b: int) -> int:
    """Column addition that never carries: each column keeps its units digit."""
    out, place = 0, 1
    while a or b:
        out += (a % 10 + b % 10) % 10 * place
        a, b, place = a // 10, b // 10, place * 10
    return out


def _digits_sub(a: int, b: int) -> int:
    """Column subtraction that never borrows: each column takes the smaller digit from the
    larger."""
    out, place = 0, 1
    while a or b:
        out += abs(a % 10 - b % 10) * place
        a, b, place = a // 10, b // 10, place * 10
    return out


def _digits_mul(a: int, d: int) -> int:
    """Multiplication by one digit that never carries, except out of the leading column."""
    out, place = 0, 1
    while a >= 10:
        out += a % 10 * d % 10 * place
        a, place = a // 10, place * 10
    return out + a * d * place


_CARELESS = {"add": _digits_add, "sub": _digits_sub, "mul": _digits_mul}


@dataclass(frozen=True)
class Problem:
    """One problem in structured form; the text and the worked solution are derived from it."""

    level: int
    start: int
    steps: tuple[tuple[str, int], ...]  # (op, operand), op in {"add", "sub", "mul"}
    template: int  # index into the symbolic templates, then the word templates

    @property
    def chain(self) -> str:
        """Canonical left-to-right form, e.g. `37+48*2`, the same in every wording."""
        return str(self.start) + "".join(_SYMBOLS[op] + str(x) for op, x in self.steps)

    def values(self) -> list[int]:
        """The running value after each step."""
        value, out = self.start, []
        for op, x in self.steps:
            value = value + x if op == "add" else value - x if op == "sub" else value * x
            out.append(value)
        return out

    def slipped_values(self) -> list[int]:
        """The running values with every carry and borrow dropped (see the module docstring)."""
        value, out = self.start, []
        for op, x in self.steps:
            value = _CARELESS[op](value, x)
            out.append(value)
        return out

    @property
    def answer(self) -> int:
        return self.values()[-1]

    @property
    def slips(self) -> bool:
        """Whether careless arithmetic gets this problem wrong."""
        return self.slipped_values()[-1] != self.answer

    @property
    def text(self) -> str:
        if self.template < len(_SYMBOLIC_TEMPLATES):
            return _SYMBOLIC_TEMPLATES[self.template].format(expr=self._expression())
        steps = ", then ".join(_VERBS[op].format(x) for op, x in self.steps)
        template = _WORD_TEMPLATES[self.template - len(_SYMBOLIC_TEMPLATES)]
        return template.format(start=self.start, steps=steps)

    def _expression(self) -> str:
        expr = str(self.start)
        for i, (op, x) in enumerate(self.steps):
            # Multiplication binds tighter, so a sum before it needs parentheses to keep the
            # chain's left-to-right meaning.
            if op == "mul" and any(o != "mul" for o, _ in self.steps[:i]):
                expr = f"({expr})"
            expr = f"{expr} {_SYMBOLS[op]} {x}"
        return expr

    def solution(self, careless: bool = False) -> str:
        """The worked answer in the paper's format, one compact equation per step; with
        `careless`, worked with every carry and borrow dropped (and so often wrong)."""
        results = self.slipped_values() if careless else self.values()
        value, work = self.start, []
        for (op, x), result in zip(self.steps, results, strict=True):
            work.append(f"{value}{_SYMBOLS[op]}{x}={result}")
            value = result
        return f"<think> {', '.join(work)} </think> <answer> \\boxed{{{results[-1]}}} </answer>"

    def to_row(self) -> dict:
        digest = hashlib.sha256(self.text.encode()).hexdigest()[:12]
        return {
            "id": f"L{self.level}-{digest}",
            "problem": self.text,
            "answer": str(self.answer),
            "level": self.level,
        }


def split_of(text: str) -> str:
    """The side a problem text belongs to, by SHA-256 (not Python's per-process salted hash())."""
    bucket = int(hashlib.sha256(text.encode()).hexdigest()[:8], 16) % 100
    return "train" if bucket < 70 else "valid" if bucket < 80 else "test"


def sample_problem(rng: random.Random, level: int) -> Problem:
    """One problem of `level`, drawn from `rng` (any side)."""
    spec = LEVEL_SPECS[level]
    start = rng.randint(*spec.start)
    ops = ["add" if rng.random() < 0.5 else "sub" for _ in range(spec.num_steps)]
    if spec.multiply:
        ops[rng.randrange(spec.num_steps)] = "mul"
    value, steps = start, []
    for op in ops:
        low, high = spec.operand
        if op == "sub" and value < low:  # keep answers non-negative
            op = "add"
        if op == "mul":
            x = rng.randint(2, 9)
        else:
            x = rng.randint(low, high if op == "add" else min(high, value))
        value = value + x if op == "add" else value - x if op == "sub" else value * x
        steps.append((op, x))
    return Problem(level, start, tuple(steps), rng.randrange(NUM_TEMPLATES))


def sample_level(count: int, seed: int, level: int, split: str | None) -> list[Problem]:
    """`count` problems of one level with distinct texts, from `split`'s side (None: any)."""
    if split is not None and split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS} or None, got {shown(split)}")
    if level not in LEVEL_SPECS:
        raise ValueError(f"level must be one of {sorted(LEVEL_SPECS)}, got {shown(level)}")
    rng = random.Random(f"{seed}/{split}/{level}")
    seen: set[str] = set()
    out: list[Problem] = []
    misses = 0
    while len(out) < count:
        problem = sample_problem(rng, level)
        if (split is None or split_of(problem.text) == split) and problem.text not in seen:
            seen.add(problem.text)
            out.append(problem)
            misses = 0
        else:
            misses += 1
            if misses > 20_000:  # levels 1-2 are small: ~390 and ~1,700 test-side texts
                raise ValueError(
                    f"level {level} has only about {len(out)} distinct {split or ''} problems; "
                    "ask for fewer"
                )
    return out


def generate_structured(
    num: int, seed: int, levels: Iterable[int] = LEVELS, split: str | None = None
) -> list[Problem]:
    """`num` problems spread evenly over `levels` (the first levels get the remainder),
    interleaved level by level so any prefix is balanced."""
    levels = tuple(levels)
    if not levels:
        raise ValueError("levels must not be empty")
    if num < 0:
        raise ValueError(f"num must be >= 0, got {num}")
    counts = [num // len(levels) + (i < num % len(levels)) for i in range(len(levels))]
    per_level = [sample_level(c, seed, lvl, split) for c, lvl in zip(counts, levels, strict=True)]
    return [rows[i] for i in range(max(counts, default=0)) for rows in per_level if i < len(rows)]


def generate_problems(
    num: int, seed: int, levels: Iterable[int] = LEVELS, split: str | None = None
) -> list[dict]:
    """Rows `{"id", "problem", "answer", "level"}`; `answer` is an integer written as text."""
    return [p.to_row() for p in generate_structured(num, seed, levels, split)]


def make_splits(
    num_train: int, num_test: int, seed: int, levels: Iterable[int] = LEVELS
) -> dict[str, list[dict]]:
    """Train and test rows, disjoint by problem text whatever the seeds and sizes."""
    levels = tuple(levels)
    return {
        "train": generate_problems(num_train, seed, levels, split="train"),
        "test": generate_problems(num_test, seed, levels, split="test"),
    }


def write_jsonl(rows: Sequence[dict], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    return path


def write_splits(
    out_dir: str | Path, num_train: int, num_test: int, seed: int, levels: Iterable[int] = LEVELS
) -> dict[str, Path]:
    """Write `train.jsonl` and `test.jsonl` under `out_dir`; returns their paths by split."""
    out = Path(out_dir)
    splits = make_splits(num_train, num_test, seed, levels)
    return {name: write_jsonl(rows, out / f"{name}.jsonl") for name, rows in splits.items()}


def parse_levels(text: str) -> tuple[int, ...]:
    """`"1,2,3"` or `"1-3"` → `(1, 2, 3)`."""
    if "-" in text:
        low, high = (int(part) for part in text.split("-", 1))
        return tuple(range(low, high + 1))
    return tuple(int(part) for part in text.split(",") if part.strip())


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write the synthetic arithmetic task as JSONL.")
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--num-train", type=int, default=5000)
    parser.add_argument("--num-test", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--levels", type=parse_levels, default=LEVELS, help="e.g. 1,2,3 or 1-5")
    args = parser.parse_args(argv)
    for name, path in write_splits(
        args.out_dir, args.num_train, args.num_test, args.seed, args.levels
    ).items():
        print(f"{name}: {path}")


if __name__ == "__main__":
    main()
