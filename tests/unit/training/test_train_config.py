"""Config loading: unknown keys and bad values fail with the key's name."""

import pytest

from aapo.config import ConfigError, load_config
from aapo.training.config import TrainConfig


def test_unknown_key_names_it_and_suggests():
    with pytest.raises(ConfigError, match=r"unknown config key 'learing_rate'.*'learning_rate'"):
        load_config(TrainConfig, None, ["--learing_rate", "1e-5"])


def test_unknown_key_in_yaml_names_file(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("num_generations: 4\nbogus_key: 1\n")
    with pytest.raises(ConfigError, match=rf"'bogus_key' in {path}"):
        load_config(TrainConfig, path, [])


def test_overrides_win_and_are_typed(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("learning_rate: 1\nreward_funcs: [format]\n")
    config = load_config(
        TrainConfig, path, ["--num_generations=4", "beta=0.1", "--momentum_clip", "false"]
    )
    assert config.learning_rate == 1.0 and isinstance(config.learning_rate, float)
    assert (config.num_generations, config.beta, config.momentum_clip) == (4, 0.1, False)
    assert config.reward_funcs == ["format"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--num_generations", "abc"], "num_generations"),
        (["--momentum_clip", "3"], "momentum_clip"),
        (["--num_generations", "1"], "num_generations must be >= 2"),
        (["--scale_rewards", "std"], "scale_rewards must be one of"),
        (["--reward_weights", "[1, 2, 3]"], "reward_weights has 3 entries"),
        (["--delta_low", "0.5"], "delta_low"),
        (["--max_steps"], "needs a value"),
        (["--reward_kwargs", "{cosine: {max_length: 3}}"], "not in reward_funcs"),
    ],
)
def test_bad_values_are_named(args, message):
    with pytest.raises(ConfigError, match=message):
        load_config(TrainConfig, None, args)


def test_missing_config_file_lists_recipes():
    with pytest.raises(ConfigError, match=r"not found.*default"):
        load_config(TrainConfig, "no_such_recipe", [])


def test_shipped_recipes_load():
    from aapo.config import recipe_names

    assert {"default", "aapo_1.5b", "aapo_7b", "aapo_llama"} <= set(recipe_names())
    for name in recipe_names():
        load_config(TrainConfig, name, [])


def test_prompts_per_step_must_divide():
    # refused when the config is built, before any model loads
    with pytest.raises(ValueError, match="not a multiple of num_generations"):
        config = TrainConfig(
            num_generations=6, per_device_train_batch_size=4, gradient_accumulation_steps=1
        )
        config.prompts_per_step()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--temperature", "0"], "temperature must be > 0"),
        (["--num_generations", "3"], "not a multiple of num_generations = 3"),
        (["--learning_rate", "-1"], "learning_rate must be > 0, got -1.0"),
        (["--top_p", "0"], r"top_p must be in \(0, 1\], got 0.0"),
        (["--lr_scheduler_type", "bogus"], "lr_scheduler_type must be one of"),
        (["--epsilon", "-1"], "epsilon must be >= 0"),
        (["--save_total_limit", "0"], "save_total_limit must be >= 1"),
        (["--reward_timeout", "0"], "reward_timeout must be > 0"),
        (["--min_informative_fraction", "2"], r"min_informative_fraction must be in \[0, 1\]"),
        (["--steps_per_generation", "3", "--gradient_accumulation_steps", "2",
          "--per_device_train_batch_size", "8"], "must be a positive multiple"),
        (["--num_iterations", "2", "--save_steps", "3"], "save_steps = 3 must be a multiple"),
    ],
)  # fmt: skip
def test_bad_options_are_refused_when_the_config_is_built(args, message):
    """Each of these used to fail late (after the model loaded) or never."""
    with pytest.raises(ConfigError, match=message):
        load_config(TrainConfig, "default", args)
