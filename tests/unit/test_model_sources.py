"""Model names are located and their config checked before any weights load, each refusal one
line that says what to do; the hub is asked once, without retries."""

import json
import shutil
import time
from pathlib import Path

import pytest
from huggingface_hub import constants

from aapo import model_sources
from aapo.assets import TINY_MODEL_DIR
from aapo.model_sources import ModelError, inspect, locate
from aapo.models import inspect_model

HUB_ID = "someone/not-downloaded-model"


def _model_dir(tmp_path: Path, **config_changes) -> Path:
    """A copy of the bundled model's config.json with `config_changes` (None removes a key)."""
    folder = tmp_path / "model"
    folder.mkdir()
    config = json.loads((Path(TINY_MODEL_DIR) / "config.json").read_text())
    for key, value in config_changes.items():
        if value is None:
            config.pop(key, None)
        else:
            config[key] = value
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_a_file_is_not_a_model_directory(tmp_path):
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"x")
    with pytest.raises(ModelError, match=r"is a file, not a model directory: give the directory"):
        locate(str(weights))


def test_a_directory_without_config_json_is_named(tmp_path):
    with pytest.raises(ModelError, match=r"has no config.json: give the directory save_pretrained"):
        locate(str(tmp_path))


@pytest.mark.parametrize("name", ["/no/such/model", "./no-such-model", "runs/a/b"])
def test_a_missing_path_is_not_sent_to_the_hub(name):
    with pytest.raises(ModelError, match=rf"model path '{name}' does not exist"):
        locate(name)


def test_offline_and_not_cached_says_how_to_download(monkeypatch, tmp_path):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(ModelError) as info:
        locate(HUB_ID)
    assert "HF_HUB_OFFLINE is set" in str(info.value)
    assert f"`hf download {HUB_ID}`" in str(info.value) and "or pass a local path" in str(
        info.value
    )


def test_an_unreachable_hub_is_asked_once_without_retries(monkeypatch, tmp_path):
    """`aapo train --config aapo_1.5b` took 51 s of retries and two chained tracebacks."""
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # refused at once
    started = time.monotonic()
    with pytest.raises(ModelError) as info:
        locate(HUB_ID)
    assert time.monotonic() - started < 5
    message = str(info.value)
    assert f"model '{HUB_ID}' is not a local directory and the hub cannot be reached" in message
    assert f"download it first with `hf download {HUB_ID}`" in message


def test_a_cached_model_loads_from_its_snapshot_when_the_hub_is_unreachable(monkeypatch, tmp_path):
    repo = tmp_path / "models--someone--not-downloaded-model"
    snapshot = repo / "snapshots" / ("a" * 40)
    shutil.copytree(TINY_MODEL_DIR, snapshot)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("a" * 40)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")
    assert locate(HUB_ID) == str(snapshot)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # transformers reads the cache itself
    assert locate(HUB_ID) == HUB_ID


def test_an_invalid_hub_id_is_named(monkeypatch, tmp_path):
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(ModelError, match="neither a local directory nor a valid hub id"):
        locate("no such model")


def test_an_unknown_architecture_is_refused_with_the_version(tmp_path):
    folder = _model_dir(tmp_path, model_type="brand_new_lm")
    with pytest.raises(ModelError, match=r"model_type 'brand_new_lm', which transformers [\d.]+"):
        inspect(str(folder), "mine")


def test_remote_code_is_refused(tmp_path):
    auto_map = {"AutoConfig": "configuration_x.XConfig", "AutoModelForCausalLM": "modeling_x.X"}
    folder = _model_dir(tmp_path, model_type="x_lm", auto_map=auto_map)
    with pytest.raises(ModelError, match=r"needs its repository's own Python code \(auto_map"):
        inspect(str(folder), "mine")


def test_auto_map_beside_an_architecture_transformers_ships_loads_that_one(tmp_path, caplog):
    folder = _model_dir(tmp_path, auto_map={"AutoModelForCausalLM": "modeling_x.X"})
    assert inspect(str(folder), "mine").model_type == "qwen2"
    assert "never runs that code" in caplog.text


def test_a_model_without_a_causal_lm_class_is_refused(tmp_path):
    folder = _model_dir(tmp_path, model_type="t5", architectures=None)
    with pytest.raises(ModelError, match="has no causal language-model class"):
        inspect(str(folder), "mine")


def test_a_config_that_is_not_json_is_named(tmp_path):
    (tmp_path / "config.json").write_text("{model_type: qwen2")
    with pytest.raises(ModelError, match="is not valid JSON"):
        inspect(str(tmp_path), "mine")


def test_context_length_and_weights_are_read_without_loading():
    info = inspect_model("bundled")
    assert (info.model_type, info.max_positions) == ("qwen2", 512)
    weights = sum(f.stat().st_size for f in Path(TINY_MODEL_DIR).glob("*.safetensors"))
    assert info.weights_bytes == weights > 0


def test_an_aliased_context_length_is_read(tmp_path):
    changes = {"model_type": "gpt2", "n_positions": 128, "max_position_embeddings": None}
    folder = _model_dir(tmp_path, **changes, architectures=None)
    assert model_sources.inspect(str(folder), "mine").max_positions == 128
