"""Eval resume with another batch size is refused: draws are seeded per batch."""

from pathlib import Path

import pytest

from aapo.config import ConfigError
from aapo.evaluation import EvalConfig
from aapo.evaluation.store import SampleStore, make_fingerprint


def _record(sample: int) -> dict:
    return {"benchmark": "toy", "id": "q0", "sample": sample, "prompt": "P", "completion": "x",
            "gold": "1", "correct": False}  # fmt: skip


def test_a_resume_with_another_batch_size_is_refused_naming_it(tmp_path: Path) -> None:
    model = tmp_path / "model"
    model.mkdir()
    (model / "model.safetensors").write_bytes(b"weights")
    first = make_fingerprint(EvalConfig(batch_size=3), str(model), "float32")
    with SampleStore.open(tmp_path / "out", first) as store:
        store.append([_record(0)])
    again = make_fingerprint(EvalConfig(batch_size=3), str(model), "float32")
    SampleStore.open(tmp_path / "out", again).close()  # same settings: resumed
    other = make_fingerprint(EvalConfig(batch_size=2), str(model), "float32")
    with pytest.raises(ConfigError, match=r"batch_size: 3 then, 2 now"):
        SampleStore.open(tmp_path / "out", other)
