"""Shared test setup: offline, few threads, the path of ../shared/data when present, and the
rule for tests marked `vllm`: skipped where vLLM does not import, except in CI (CI=true),
where the README's test command installs it and a missing vLLM must fail, not skip. A CI run
that installs no vLLM on purpose deselects them (`-m "not vllm"`)."""

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} is absent")
    return SHARED_DATA


def _vllm_missing() -> str:
    """Why vLLM cannot be used here ('' when it can); imports it only once asked."""
    try:
        from aapo.rollout.vllm_engine import import_vllm

        import_vllm()
    except ImportError as err:
        return str(err)
    return ""


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    marked = [item for item in items if item.get_closest_marker("vllm")]
    if not marked or os.environ.get("CI") == "true":
        return
    missing = _vllm_missing()
    if missing:
        skip = pytest.mark.skip(reason=f"vLLM is not importable: {missing}")
        for item in marked:
            item.add_marker(skip)
