"""Command-line values are read by their option's type; a typo is placed on the command line."""

import pytest

from aapo.config import ConfigError, load_config, parse_overrides
from aapo.evaluation import EvalConfig
from aapo.training.config import TrainConfig


def test_string_options_keep_the_text_as_typed():
    config = load_config(
        TrainConfig,
        "default",
        ["--prompt_template", "{problem}", "--system_prompt", "Note: answer in boxed",
         "--gpg_norm", "1", "--output_dir", "[runs]"],
    )  # fmt: skip
    assert config.prompt_template == "{problem}"
    assert config.system_prompt == "Note: answer in boxed"
    assert config.gpg_norm == "1" and config.output_dir == "[runs]"


def test_typed_options_are_still_parsed():
    config = load_config(
        TrainConfig,
        None,
        ["--learning_rate", "1e-3", "--reward_funcs", "[format, accuracy]",
         "--epsilon_high", "null", "--system_prompt", "null", "--max_steps=5",
         "--use_peft", "true", "--lr_scheduler_type", "cosine_with_min_lr",
         "--lr_scheduler_kwargs", "{min_lr_rate: 0.1}"],
    )  # fmt: skip
    assert config.learning_rate == 1e-3 and isinstance(config.learning_rate, float)
    assert config.reward_funcs == ["format", "accuracy"]
    assert config.epsilon_high is None and config.system_prompt is None
    assert config.max_steps == 5 and config.use_peft is True
    assert config.lr_scheduler_kwargs == {"min_lr_rate": 0.1}


def test_eval_prompt_template_stays_text():
    config = load_config(EvalConfig, None, ["--prompt_template", "{problem}"])
    assert config.prompt_template == "{problem}"


def test_overrides_are_raw_text():
    assert parse_overrides(["--a", "{x}", "b=[1, 2]", "--c=1e-3"]) == {
        "a": "{x}",
        "b": "[1, 2]",
        "c": "1e-3",
    }


def test_a_command_line_typo_is_reported_on_the_command_line_not_in_the_recipe():
    with pytest.raises(ConfigError) as info:
        load_config(TrainConfig, "default", ["--num_generatoins", "4"])
    message = str(info.value)
    assert "unknown config key 'num_generatoins' on the command line" in message
    assert "'num_generations'" in message and "default" not in message


def test_a_typo_in_the_recipe_file_still_names_the_file(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("num_generatoins: 4\n")
    with pytest.raises(ConfigError, match=rf"'num_generatoins' in {path}"):
        load_config(TrainConfig, path, [])


def test_a_non_number_for_a_number_is_still_refused():
    with pytest.raises(ConfigError, match="learning_rate"):
        load_config(TrainConfig, None, ["--learning_rate", "fast"])
