"""`aapo train` refuses what it can check before any model loads with one line and exit 2:
no traceback, no weights loaded, no waiting on an unreachable hub."""

import os
import subprocess
import sys
import time

import pytest

LAZY_REWARD = "def lazy(prompts, completions, **kwargs):\n    return (1.0 for _ in completions)\n"


@pytest.mark.parametrize("case", ["hub unreachable", "reward returns a generator", "output a file"])
def test_a_refusal_before_the_model_loads_is_one_line(tmp_path, case):
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]),
    }
    args = ["--output_dir", str(tmp_path / "run")]
    if case == "hub unreachable":  # `aapo train --config aapo_1.5b` took 51 s, two tracebacks
        for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
            env.pop(name, None)
        env.update(HF_ENDPOINT="http://127.0.0.1:9", HF_HOME=str(tmp_path / "hf"))
        args = ["--config", "aapo_1.5b", *args]
        expected = "model 'deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B' is not a local directory "
    elif case == "reward returns a generator":
        (tmp_path / "lazy_reward.py").write_text(LAZY_REWARD)
        args += ["--reward_funcs", "[format, 'lazy_reward:lazy']", "--reward_weights", "[1, 1]"]
        expected = "reward function 'lazy' returned a value that cannot be sent back"
    else:
        (tmp_path / "run").write_text("")
        expected = "output_dir"
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "aapo", "train", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    errors = [line for line in result.stderr.splitlines() if line.startswith("aapo train: error:")]
    assert result.returncode == 2, result.stderr[-3000:]
    assert len(errors) == 1 and expected in errors[0], result.stderr[-3000:]
    assert "Traceback" not in result.stderr and "Loading weights" not in result.stderr
    assert time.monotonic() - started < 120  # start-up only: no retries, no weights
