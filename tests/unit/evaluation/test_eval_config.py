"""EvalConfig from command-line overrides, validation, and the `auto` benchmark list."""

from __future__ import annotations

import pytest

from aapo.config import ConfigError, load_config
from aapo.evaluation import PAPER_BENCHMARKS, EvalConfig
from aapo.evaluation.harness import benchmark_names, model_label, slug


def test_defaults_follow_the_paper() -> None:
    config = EvalConfig()
    assert (config.temperature, config.top_p, config.num_samples) == (0.6, 0.95, 1)
    assert config.backend == "transformers" and config.model == "bundled"


def test_overrides_and_comma_lists() -> None:
    config = load_config(
        EvalConfig, None, ["--benchmarks", "aime24,math500", "--limit", "3", "--temperature", "1"]
    )
    assert config.benchmarks == ["aime24", "math500"]
    assert config.limit == 3 and config.temperature == 1.0
    assert load_config(EvalConfig, None, ["--benchmarks", "synthetic"]).benchmarks == ["synthetic"]


@pytest.mark.parametrize(
    "overrides",
    [
        ["--backend", "tgi"],
        ["--num_samples", "0"],
        ["--limit", "0"],
        ["--top_p", "0"],
        ["--benchmarks", "aime24,aime24"],
        ["--benchmarks", ","],
        ["--num_sample", "4"],
    ],
)
def test_bad_values_are_config_errors(overrides: list[str]) -> None:
    with pytest.raises(ConfigError):
        load_config(EvalConfig, None, overrides)


def test_auto_benchmarks_depend_on_the_model() -> None:
    assert benchmark_names(EvalConfig()) == ["synthetic"]
    assert benchmark_names(EvalConfig(model="Qwen/Qwen2.5-Math-7B")) == list(PAPER_BENCHMARKS)
    mixed = EvalConfig(model="m", benchmarks=["synthetic", "auto", "aime24"])
    assert benchmark_names(mixed) == ["synthetic", *PAPER_BENCHMARKS]


def test_labels_and_default_folders() -> None:
    assert model_label("bundled") == "tiny-math-lm (bundled)"
    assert slug(model_label("bundled")) == "tiny-math-lm-bundled"
    assert slug("runs/aapo/final") == "runs-aapo-final"
    assert slug("Qwen/Qwen2.5-Math-7B") == "Qwen-Qwen2.5-Math-7B"
