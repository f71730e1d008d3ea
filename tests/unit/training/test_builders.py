"""The trainer's named builders: options flow to estimators by signature, defaults fill unset
options, and bad rewards fail before any model loads."""

import json
from pathlib import Path

import pytest
import torch

from aapo.algorithms import AdvantageResult, get_advantage, register_advantage
from aapo.config import load_config
from aapo.training import builders, preflight
from aapo.training.config import TrainConfig

RECEIVED: list[float] = []


@register_advantage("scaled_by_gain_for_tests")
def scaled_by_gain(rewards, *, valid=None, gain: float = 1.0):
    """A user's estimator with an option no config key knows: it receives it from YAML."""
    RECEIVED.append(gain)
    centred = rewards - rewards.mean(dim=1, keepdim=True)
    return AdvantageResult(gain * centred, {})


def test_user_estimator_option_arrives_from_yaml(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(
        "advantage_estimator: scaled_by_gain_for_tests\nadvantage_kwargs: {gain: 3.0}\n"
    )
    config = load_config(TrainConfig, path, [])
    options = builders.advantage_options(config, get_advantage("scaled_by_gain_for_tests"))
    assert options == {"gain": 3.0}  # no config key is named `gain`: only the mapping has it


def test_aapo_gets_its_options_by_signature_and_nothing_else(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("delta_high: 0.5\ndelta_low: -0.1\nmomentum_clip: false\n")
    config = load_config(TrainConfig, path, [])
    options = builders.advantage_options(config, get_advantage("aapo"))
    assert options == {
        "delta_low": -0.1,
        "delta_high": 0.5,
        "momentum_clip": False,
        "scale_rewards": "group",
    }
    grpo = builders.advantage_options(config, get_advantage("grpo"))
    assert grpo == {"scale_rewards": "group"}  # no AAPO option leaks into GRPO


def test_unknown_advantage_kwarg_is_named():
    config = TrainConfig(advantage_kwargs={"gian": 2.0})
    with pytest.raises(ValueError, match=r"\['gian'\] are not options of estimator 'aapo'"):
        builders.advantage_options(config, get_advantage("aapo"))


def test_advantage_kwargs_may_not_shadow_config_keys():
    with pytest.raises(ValueError, match=r"advantage_kwargs sets \['delta_high'\]"):
        TrainConfig(advantage_kwargs={"delta_high": 0.3})


def test_algorithm_defaults_fill_only_unset_options():
    assert builders.prepare_config(TrainConfig(algorithm="dapo")).epsilon_high == 0.28
    assert builders.prepare_config(TrainConfig(algorithm="grpo")).epsilon_high is None
    chosen = TrainConfig(algorithm="dapo", epsilon_high=0.4)
    assert builders.prepare_config(chosen).epsilon_high == 0.4


@pytest.mark.parametrize(
    ("overrides", "yaml", "dynamic", "epsilon_high"),
    [
        (["--algorithm", "dapo"], "", True, 0.28),
        (["--algorithm", "dapo", "--dynamic_sampling", "false"], "", False, 0.28),
        (["--algorithm", "dapo", "--epsilon_high", "null"], "", True, None),
        ([], "algorithm: dapo\ndynamic_sampling: false\nepsilon_high: null\n", False, None),
        (["--algorithm", "dapo"], "dynamic_sampling: false\n", False, 0.28),
    ],
)
def test_options_set_in_yaml_or_on_the_command_line_win_over_the_preset(
    tmp_path, overrides, yaml, dynamic, epsilon_high
):
    # DAPO's preset fills epsilon_high 0.28 and dynamic_sampling true; a value the user wrote
    # stays, even where it equals TrainConfig's own default (false, null)
    path = tmp_path / "run.yaml"
    path.write_text(yaml)
    prepared = builders.prepare_config(load_config(TrainConfig, path, overrides))
    assert (prepared.dynamic_sampling, prepared.epsilon_high) == (dynamic, epsilon_high)


def test_keywords_given_in_python_win_over_the_preset_and_preparing_twice_changes_nothing():
    chosen = TrainConfig(algorithm="dapo", dynamic_sampling=False, epsilon_high=None)
    assert chosen.explicit == {"algorithm", "dynamic_sampling", "epsilon_high"}
    prepared = builders.prepare_config(chosen)
    assert (prepared.dynamic_sampling, prepared.epsilon_high) == (False, None)
    filled = builders.prepare_config(TrainConfig(algorithm="dapo"))
    assert (filled.dynamic_sampling, filled.epsilon_high) == (True, 0.28)
    assert builders.prepare_config(filled) == filled


def test_injected_reward_functions_and_weights():
    def one(prompts, completions, **kwargs):
        return [1.0] * len(completions)

    config = TrainConfig(reward_funcs=["format"], reward_weights=[2.0])
    scorer = builders.build_scorer(config, {"one": one})
    assert scorer.names == ["one"]
    assert scorer.weights.tolist() == [2.0]
    with pytest.raises(ValueError, match="2 reward_weights for 1 reward functions"):
        builders.build_scorer(TrainConfig(reward_weights=[1.0, 1.0]), {"one": one})


def test_bad_reward_fails_before_any_model_loads(tmp_path, monkeypatch):
    from aapo.training import trainer

    def must_not_load(*args, **kwargs):
        raise AssertionError("the model was loaded before the reward was checked")

    monkeypatch.setattr(builders, "load_model", must_not_load)
    monkeypatch.setattr(trainer, "load_tokenizer", must_not_load)
    config = TrainConfig(reward_funcs=["acuracy"], output_dir=str(tmp_path), report_to=[])
    with pytest.raises(ValueError, match="unknown reward 'acuracy'"):
        trainer.Trainer(config)


def test_batch_layout_is_derived_once():
    layout = TrainConfig(
        num_generations=4, per_device_train_batch_size=8, gradient_accumulation_steps=2
    ).batch_layout(num_processes=2)
    # 8 × 2 = 16 completions per process = 4 prompts × G; 2 processes → 8 prompts, 32 completions
    assert (layout.prompts_per_process, layout.prompts_per_step) == (4, 8)
    assert layout.completions_per_step == 32


def test_estimator_receives_gain_in_a_real_step(tmp_path):
    """End to end: YAML → config → registry → the user's estimator, in a training step."""
    from aapo.models import load_tokenizer
    from aapo.rollout import Sample
    from aapo.training.trainer import Trainer

    tokenizer = load_tokenizer("bundled")
    texts = ["<think> 1 </think> <answer> \\boxed{1} </answer>", "<think> 2 </think>"]
    ids = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]

    class Crafted:
        def generate(self, prompts, params):
            return [
                [Sample(list(ids[i % 2]), texts[i % 2], False) for i in range(params.n)]
                for _ in prompts
            ]

    path = tmp_path / "run.yaml"
    path.write_text(
        "advantage_estimator: scaled_by_gain_for_tests\nadvantage_kwargs: {gain: 7.0}\n"
        "num_generations: 2\nper_device_train_batch_size: 4\ngradient_accumulation_steps: 1\n"
        f"max_steps: 1\ndataset_size: 16\nreport_to: []\noutput_dir: {tmp_path / 'run'}\n"
    )
    RECEIVED.clear()
    trainer = Trainer(
        load_config(TrainConfig, path, []), policy_sampler=Crafted(), reference_sampler=Crafted()
    )
    trainer.train()
    assert RECEIVED == [7.0]


@pytest.fixture
def weights_must_not_load(monkeypatch):
    def must_not_load(*args, **kwargs):
        raise AssertionError("the weights were loaded before the check")

    monkeypatch.setattr(builders, "load_model", must_not_load)


def _small_jsonl(tmp_path, rows: int):
    path = tmp_path / "small.jsonl"
    lines = [json.dumps({"problem": f"{i} + 1", "answer": str(i + 1)}) for i in range(rows)]
    path.write_text("\n".join(lines) + "\n")
    return str(path)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"max_completion_length": 100000},
         r"longest prompt \(\d+ tokens, row \d+\) plus max_completion_length 100000 is \d+ tokens, "
         r"beyond the 512 positions of model 'bundled' \(max_position_embeddings in config.json\)"
         r": lower max_completion_length to at most \d+$"),
        ({"max_completion_length": 500},
         r"lower max_completion_length to at most \d+, or max_prompt_length to at most 12 "),
        ({"eval_num_problems": 4, "eval_max_new_tokens": 600},
         r"plus eval_max_new_tokens 600 is \d+ tokens"),
        ({"max_prompt_length": 3},
         r"every prompt is longer than max_prompt_length=3 tokens \(the shortest has \d+"),
        ({"dataset_name": "SMALL"},
         r"3 usable prompts is fewer than the 8 one generation batch draws over 1 processes"),
    ],
)  # fmt: skip
def test_checks_on_config_json_and_the_prompts_run_before_the_weights_load(
    tmp_path, weights_must_not_load, overrides, message
):
    """Each was found after the weights loaded (or during the first generation), or was a
    bare ValueError: a traceback from the CLI."""
    from aapo.config import ConfigError
    from aapo.training.trainer import Trainer

    if overrides.get("dataset_name") == "SMALL":
        overrides = {"dataset_name": _small_jsonl(tmp_path, 3)}
    config = TrainConfig(output_dir=str(tmp_path / "run"), report_to=[], **overrides)
    with pytest.raises(ConfigError, match=message):
        Trainer(config)


@pytest.mark.parametrize("case", ["file", "inside a file", "not writable"])
def test_an_unusable_output_dir_is_refused_before_the_weights_load(
    tmp_path, weights_must_not_load, case
):
    from aapo.config import ConfigError
    from aapo.training.trainer import Trainer

    (tmp_path / "f").write_text("")
    output_dir, message = {
        "file": (tmp_path / "f", r"output_dir '.*/f' is a file: choose a directory"),
        "inside a file": (tmp_path / "f" / "run", r"'.*/f/run' is inside '.*/f', a file"),
        "not writable": (Path("/sys/aapo-test-run"), r"cannot be used: it is not writable"),
    }[case]
    if case == "not writable" and not Path("/sys").is_dir():
        pytest.skip("needs Linux's /sys, where even root cannot create a directory")
    config = TrainConfig(output_dir=str(output_dir), report_to=[], dataset_size=64)
    with pytest.raises(ConfigError, match=message):
        Trainer(config)


def test_the_disk_must_have_room_for_the_run(tmp_path):
    from aapo.config import ConfigError
    from aapo.model_sources import ModelInfo

    huge = ModelInfo(str(tmp_path), "qwen2", 512, None, parameters=10**13)
    config = TrainConfig(output_dir=str(tmp_path / "run"), save_steps=0)
    with pytest.raises(ConfigError, match=r"free on its disk, but this run writes about 40.0 TB"):
        preflight.check_output_dir(config, huge, 100, torch.float32)


def test_what_a_run_writes_is_its_final_model_and_the_checkpoints_kept_at_once():
    from aapo.model_sources import ModelInfo

    model = ModelInfo("m", "qwen2", 512, None, parameters=1000)
    # final model: 1000 parameters x 2 bytes (bf16) = 2000
    only_final = TrainConfig(save_steps=0)
    assert preflight.output_bytes(only_final, model, 100, torch.bfloat16)[0] == 2000
    # saves at steps 8, 16, ..., 96 (12 of them); 2 kept, a 3rd written before one goes;
    # each 1000 x 12 bytes (fp32 weights + AdamW's two moments): 2000 + 3 x 12000
    config = TrainConfig(save_steps=8, save_total_limit=2)
    needed, parts = preflight.output_bytes(config, model, 100, torch.bfloat16)
    assert needed == 2000 + 3 * 12000
    assert parts == "the final model 2.0 KB, 3 checkpoints at once of 12.0 KB each"
    keep_all = TrainConfig(save_steps=8, save_total_limit=None)
    assert preflight.output_bytes(keep_all, model, 100, torch.bfloat16)[0] == 2000 + 12 * 12000


def test_a_run_refused_before_the_weights_load_leaves_no_folder_behind(
    tmp_path, weights_must_not_load
):
    """The output folder (and its missing parents) a refused run made are gone again: the
    lock made them, and a refusal lets go of them while they are empty."""
    from aapo.config import ConfigError
    from aapo.training.trainer import Trainer

    output_dir = tmp_path / "new" / "run"
    config = TrainConfig(output_dir=str(output_dir), report_to=[], max_prompt_length=3)
    with pytest.raises(ConfigError, match="every prompt is longer than max_prompt_length"):
        Trainer(config)
    assert not (tmp_path / "new").exists()
