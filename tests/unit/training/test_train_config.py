"""Config loading: unknown keys and bad values fail with the key's name."""

import re

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

    assert {"default", "smollm2_boxed", "aapo_1.5b", "aapo_7b", "aapo_llama"} <= set(recipe_names())
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
        # the held-out split holds 1,500: more used to give 500 without a word
        (["--eval_num_problems", "2000"], r"eval_num_problems must be in \[0, 1500\] \(the "
         r"synthetic held-out split's size\), got 2000"),
        (["--eval_final_num_problems", "1501"], r"eval_final_num_problems must be in \[0, 1500\]"),
    ],
)  # fmt: skip
def test_bad_options_are_refused_when_the_config_is_built(args, message):
    """Each of these used to fail late (after the model loaded) or never."""
    with pytest.raises(ConfigError, match=message):
        load_config(TrainConfig, "default", args)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--max_completion_length", "1000000000000"],
         r"max_completion_length must be in \[1, 1048576\] \(tokens\), got 1000000000000"),
        (["--max_prompt_length", "0"], r"max_prompt_length must be in \[1, 1048576\]"),
        (["--prompt_template", "Solve this:"], "neither a known name .* nor a template"),
        (["--prompt_template", "Solve {problem} in {lang}"], r"uses \{lang\}; its only field"),
        (["--prompt_template", "{} {problem}"], r"uses \{\}; its only field"),
        (["--prompt_template", "Solve {problem"], "not a valid template: expected '}'"),
        (["--prompt_template", "Solve {problem} }"], "not a valid template: Single '}'"),
        (["--prompt_template", "{problem:{width}}"], "cannot be filled in: KeyError"),
        (["--dataset_size", "7"],
         r"dataset_size = 7 problems is fewer than the 8 prompts one generation batch draws"),
        (["--lr_scheduler_kwargs", "{min_lr_rate: 0.1}"],
         r"\['min_lr_rate'\] are not options of lr_scheduler_type 'constant' \(it takes none\)"),
        (["--lr_scheduler_type", "cosine", "--lr_scheduler_kwargs", "{min_lr_rate: 0.1}"],
         r"not options of lr_scheduler_type 'cosine' \(it takes \['num_cycles'\]\)"),
        (["--lr_scheduler_type", "warmup_stable_decay"],
         r"'warmup_stable_decay' needs lr_scheduler_kwargs \['num_decay_steps'\]"),
        (["--lr_scheduler_type", "cosine_with_min_lr"], "One of min_lr or min_lr_rate"),
        (["--lr_scheduler_type", "cosine_with_min_lr", "--lr_scheduler_kwargs",
          "{min_lr_rate: abc}"], "'cosine_with_min_lr' with lr_scheduler_kwargs"),
        (["--lr_scheduler_type", "cosine_with_min_lr", "--lr_scheduler_kwargs",
          "{min_lr: 1e-6}"], r"\['min_lr'\] arrived as text: YAML reads 1e-6 as text"),
        (["--lr_scheduler_type", "polynomial", "--lr_scheduler_kwargs", "{lr_end: 0.001}"],
         r"lr_end \(0.001\) must be smaller than initial lr \(0.0001\)"),
        (["--lr_scheduler_type", "reduce_lr_on_plateau"], "steps on a metric"),
        (["--lr_scheduler_type", "linear", "--lr_scheduler_kwargs", "{num_training_steps: 5}"],
         r"sets \['num_training_steps'\], which aapo sets itself"),
    ],
)  # fmt: skip
def test_checks_that_need_no_model_refuse_when_the_config_is_built(args, message):
    """Each of these was accepted here and failed after the model loaded, or never."""
    with pytest.raises(ConfigError, match=message):
        load_config(TrainConfig, "default", args)


@pytest.mark.parametrize(
    "args",
    [
        ["--prompt_template", "Answer in {{braces}}: {problem!s}"],
        ["--prompt_template", "eval_math", "--dataset_size", "8"],
        ["--lr_scheduler_type", "cosine_with_min_lr", "--lr_scheduler_kwargs", "{min_lr: 1.0e-6}"],
        ["--lr_scheduler_type", "warmup_stable_decay", "--lr_scheduler_kwargs",
         "{num_decay_steps: 500}"],
    ],
)  # fmt: skip
def test_what_those_checks_must_still_accept(args):
    load_config(TrainConfig, "default", args)


def test_the_final_held_out_check_defaults_to_the_periodic_one():
    assert load_config(TrainConfig, "default", []).final_eval_problems() == 250
    longer = load_config(TrainConfig, "default", ["--eval_final_num_problems", "1000"])
    assert (longer.final_eval_problems(), longer.eval_num_problems) == (1000, 250)
    assert TrainConfig(eval_num_problems=8, eval_final_num_problems=0).final_eval_problems() == 0


def test_eval_prompt_template_is_checked_when_the_config_is_built():
    from aapo.evaluation import EvalConfig

    with pytest.raises(ConfigError, match=r"uses \{lang\}"):
        load_config(EvalConfig, None, ["--prompt_template", "{problem} in {lang}"])


@pytest.mark.parametrize(
    ("recipe", "args", "weights", "kwargs"),
    [
        # default: reward_funcs [format, accuracy], reward_weights [0.5, 1.0]
        ("default", ["--reward_funcs", "[accuracy, format]"], [1.0, 0.5], {}),
        ("default", ["--reward_funcs", "[accuracy]"], [1.0], {}),
        ("default", ["--reward_funcs", "[format, accuracy, cosine]", "--reward_weights",
                     "[1, 2, 3]"], [1.0, 2.0, 3.0], {}),
        ("default", ["--reward_funcs", "[format, cosine]", "--reward_weights", "null"], None, {}),
        # aapo_1.5b: [format, cosine], [1.0, 2.0]
        ("aapo_1.5b", ["--reward_funcs", "[cosine, format]"], [2.0, 1.0], {}),
        # KWARGS_RECIPE: [accuracy, overlong], [1.0, 0.5], {overlong: {buffer: 16}}
        ("KWARGS_RECIPE", ["--reward_funcs", "[overlong, accuracy]"], [0.5, 1.0],
         {"overlong": {"buffer": 16}}),
        ("KWARGS_RECIPE", ["--reward_funcs", "[accuracy]"], [1.0], {}),
    ],
)  # fmt: skip
def test_recipe_weights_and_kwargs_follow_their_functions_by_name(
    tmp_path, recipe, args, weights, kwargs
):
    """The default recipe's [0.5, 1.0] stayed by position: `--reward_funcs [accuracy, format]`
    trained accuracy at 0.5 and format at 1.0; dropping one was refused for a length, and
    dropping one with reward_kwargs was refused for naming a function no longer listed."""
    if recipe == "KWARGS_RECIPE":
        recipe = tmp_path / "run.yaml"
        recipe.write_text(
            "reward_funcs: [accuracy, overlong]\nreward_weights: [1.0, 0.5]\n"
            "reward_kwargs: {overlong: {buffer: 16}}\n"
        )
    config = load_config(TrainConfig, recipe, args)
    assert config.reward_weights == weights
    assert config.reward_kwargs == kwargs


def test_weights_a_file_gives_the_default_functions_follow_them_too(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("reward_weights: [0.25, 1.0]\n")  # the default reward_funcs: format, accuracy
    config = load_config(TrainConfig, path, ["--reward_funcs", "[accuracy, format]"])
    assert config.reward_weights == [1.0, 0.25]


def test_functions_the_recipe_has_no_weight_for_are_refused_naming_its_weights():
    """It used to blame reward_weights' length, an option the user never set."""
    with pytest.raises(ConfigError) as info:
        load_config(TrainConfig, "default", ["--reward_funcs", "[format, accuracy, cosine]"])
    message = str(info.value)
    assert (
        "reward_funcs ['format', 'accuracy', 'cosine'] on the command line is not a "
        "reordering or subset of reward_funcs ['format', 'accuracy'] (set in default)" in message
    )
    assert "the reward_weights [0.5, 1.0] that default gives them by position" in message
    assert "give --reward_weights too (3 entries, or null)" in message


def test_a_reward_listed_twice_is_refused():
    """Both uses shared one metric key (rewards/accuracy/mean) and one reward_kwargs entry."""
    with pytest.raises(ConfigError, match=r"lists \['accuracy'\] more than once.*summed weight"):
        load_config(TrainConfig, "default", ["--reward_funcs", "[accuracy, format, accuracy]"])


def test_a_refusal_names_where_options_the_user_did_not_type_came_from():
    with pytest.raises(ConfigError) as info:
        load_config(TrainConfig, "default", ["--num_iterations", "3"])
    message = str(info.value)
    assert message.startswith("save_steps = 50 must be a multiple of the 3 optimizer steps")
    assert message.endswith("[save_steps: set in default; the command line set num_iterations]")


def test_the_cosine_cap_follows_an_overridden_completion_length():
    """The 1.5B recipe pinned cosine's max_length at 3584: --max_completion_length 1024 left
    the reward scaled for lengths the run can no longer reach."""
    from aapo.training.builders import _reward_params

    assert _reward_params("cosine", load_config(TrainConfig, "aapo_1.5b", [])) == {
        "max_length": 3584
    }
    shorter = load_config(TrainConfig, "aapo_1.5b", ["--max_completion_length", "1024"])
    assert _reward_params("cosine", shorter) == {"max_length": 1024}


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"synthetic_levels": [1, 6]}, r"synthetic_levels must be in \[1, 5\] \(each one"),
        ({"synthetic_levels": []}, "synthetic_levels must list distinct levels, got []"),
        ({"synthetic_levels": [2, 2]}, "synthetic_levels must list distinct levels"),
        (
            {"synthetic_levels": [1], "dataset_name": "d.jsonl"},
            "synthetic_levels applies to dataset_name: synthetic only",
        ),
        ({"prompt_examples": "three_shot"}, "prompt_examples 'three_shot' is neither"),
    ],
)
def test_levels_and_examples_are_checked_when_the_config_is_built(overrides, message):
    with pytest.raises(ValueError, match=message if "\\" in message else re.escape(message)):
        TrainConfig(**overrides)
