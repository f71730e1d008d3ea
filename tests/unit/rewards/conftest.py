"""Fixtures for the reward tests: graders shared by the session (a worker takes ~2 s to start)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from aapo.rewards import Grader


@pytest.fixture(scope="session")
def grader() -> Iterator[Grader]:
    # A generous timeout: the machine running the tests may be loaded.
    with Grader(timeout=20.0, num_workers=1) as shared:
        yield shared


@pytest.fixture(scope="session")
def fast_grader() -> Iterator[Grader]:
    """A short timeout, for the tests of timeouts and pathological inputs."""
    with Grader(timeout=1.0, num_workers=1) as short:
        yield short
