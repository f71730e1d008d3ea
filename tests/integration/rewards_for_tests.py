"""TRL-style rewards for the integration tests. `reward`: on its Nth call (env AAPO_KILL_AT_CALL)
it SIGKILLs its own process, as an out-of-memory killer or a pre-empted node would."""

import os
import signal

_calls = {"n": 0}


def reward(prompts, completions, **kwargs):
    _calls["n"] += 1
    kill_at = os.environ.get("AAPO_KILL_AT_CALL")
    if kill_at and _calls["n"] == int(kill_at):
        os.kill(os.getpid(), signal.SIGKILL)
    return [None] * len(completions)


def boxed_one(prompts, completions, **kwargs):
    """1.0 for completions that box the answer 1, else 0.0: mixed groups on a crafted batch."""
    return [1.0 if "\\boxed{1}" in text else 0.0 for text in completions]
