"""TRL-style rewards for the integration tests. `reward`: on its Nth call (env AAPO_KILL_AT_CALL)
it SIGKILLs the training process, as an out-of-memory killer or a pre-empted node would (when
it runs in a reward worker process, the training process is the worker's parent)."""

import os
import signal
import subprocess
import sys
import time

_calls = {"n": 0}


def _training_pid() -> int:
    spec = getattr(sys.modules["__main__"], "__spec__", None)
    in_worker = getattr(spec, "name", "") == "aapo.rewards.reward_process"
    return os.getppid() if in_worker else os.getpid()


def reward(prompts, completions, **kwargs):
    _calls["n"] += 1
    kill_at = os.environ.get("AAPO_KILL_AT_CALL")
    if kill_at and _calls["n"] == int(kill_at):
        os.kill(_training_pid(), signal.SIGKILL)
    return [None] * len(completions)


def boxed_one(prompts, completions, **kwargs):
    """1.0 for completions that box the answer 1, else 0.0: mixed groups on a crafted batch."""
    return [1.0 if "\\boxed{1}" in text else 0.0 for text in completions]


def hang_forever(prompts, completions, **kwargs):
    """Never returns: the scorer must kill it at its timeout and the run must still exit."""
    while True:
        time.sleep(3600)


def start_sleeper(prompts, completions, **kwargs):
    """Starts a long `sleep` (as a reward running a checker might) and leaves it running; its
    pid is appended to the file named by env AAPO_SLEEPER_PIDS. With AAPO_SLEEPER_HANG set, the
    call then never returns (a reward killed at its timeout)."""
    sleeper = subprocess.Popen(
        ["sleep", "300"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    with open(os.environ["AAPO_SLEEPER_PIDS"], "a", encoding="utf-8") as handle:
        handle.write(f"{sleeper.pid}\n")
    while os.environ.get("AAPO_SLEEPER_HANG"):
        time.sleep(3600)
    return [0.0] * len(completions)


def numpy_scores(prompts, completions, **kwargs):
    """numpy scores, as TRL accepts: 1.0 for each completion, as a float32 array."""
    import numpy as np

    return np.ones(len(completions), dtype=np.float32)


def answer_length(prompts, completions, answer, rendered_prompt=None, **kwargs):
    """len(answer) per row, plus 100 when a `rendered_prompt` column came through too."""
    extra = 0.0 if rendered_prompt is None else 100.0
    return [float(len(a)) + extra for a in answer]


def print_and_score(prompts, completions, **kwargs):
    """Prints to stdout (which must not corrupt the worker protocol), then scores 0.5."""
    print("a reward that prints")
    return [0.5] * len(completions)


class Stateful:
    """A reward class with constructor parameters and a call counter in `pop_metrics`."""

    def __init__(self, value: float = 1.0) -> None:
        self.value = value
        self.calls = 0

    def __call__(self, prompts, completions, **kwargs):
        self.calls += 1
        return [self.value] * len(completions)

    def pop_metrics(self):
        calls, self.calls = self.calls, 0
        return {"calls": calls}


def _register_plug_in() -> None:
    """As a plug-in module listed in `imports` does: a reward by name."""
    from aapo.rewards import register_reward, registered_rewards

    if "hard_plugin_boxed_one" not in registered_rewards():
        register_reward("hard_plugin_boxed_one", boxed_one)


_register_plug_in()
