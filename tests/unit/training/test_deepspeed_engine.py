"""What the DeepSpeed path refuses, and what it tells DeepSpeed, without DeepSpeed installed:
the run's batch, accumulation and clipping go into the DeepSpeed config; a launch config that
says otherwise, no clipping, and checkpoints are refused with the reason."""

from types import SimpleNamespace

import pytest

from aapo.config import ConfigError
from aapo.training import deepspeed_engine
from aapo.training.config import TrainConfig


def _accelerator(**given):
    plugin = SimpleNamespace(deepspeed_config=dict(given))
    return SimpleNamespace(state=SimpleNamespace(deepspeed_plugin=plugin), num_processes=2)


def test_the_run_sizes_deepspeed():
    acc = _accelerator(gradient_accumulation_steps="auto", gradient_clipping="auto", zero=2)
    config = TrainConfig(per_device_train_batch_size=4, gradient_accumulation_steps=2)
    deepspeed_engine.configure(acc, config)
    assert acc.state.deepspeed_plugin.deepspeed_config == {
        "train_micro_batch_size_per_gpu": 4,
        "gradient_accumulation_steps": 2,
        "gradient_clipping": 1.0,
        "train_batch_size": 16,  # 4 per micro-batch × 2 micro-batches × 2 processes
        "zero": 2,
    }
    assert acc.gradient_accumulation_steps == 2


def test_a_launch_config_that_disagrees_is_refused_naming_both():
    acc = _accelerator(gradient_accumulation_steps=4, gradient_clipping=1.0)
    config = TrainConfig(per_device_train_batch_size=4, gradient_accumulation_steps=2)
    with pytest.raises(ConfigError, match=r"gradient_accumulation_steps=4 \(the run's "
                       r"gradient_accumulation_steps gives 2\)"):  # fmt: skip
        deepspeed_engine.configure(acc, config)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"max_grad_norm": 0.0}, "max_grad_norm must be > 0 under DeepSpeed"),
        ({"save_steps": 4}, "checkpoints are not supported under DeepSpeed"),
        ({"resume_from_checkpoint": "latest"}, "checkpoints are not supported under DeepSpeed"),
    ],
)
def test_what_the_deepspeed_path_cannot_do_is_refused(changes, message):
    with pytest.raises(ConfigError, match=message):
        deepspeed_engine.check_options(TrainConfig(**changes))
    deepspeed_engine.check_options(TrainConfig())  # the defaults pass
