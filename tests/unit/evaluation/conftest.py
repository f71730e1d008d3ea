"""Fixtures for the evaluation tests: one grader for the session (a worker takes ~1 s to start)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from aapo.rewards import Grader


@pytest.fixture(scope="session")
def eval_grader() -> Iterator[Grader]:
    with Grader(timeout=20.0) as grader:  # generous: the test machine may be loaded
        yield grader
