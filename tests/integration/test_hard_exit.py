"""A reward that never returns must not keep `aapo train` alive after its last step."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
EXIT_WITHIN_S = 30


def _last_step(metrics: Path) -> int:
    if not metrics.exists():
        return 0
    steps = [json.loads(line)["step"] for line in metrics.read_text().splitlines() if line.strip()]
    return steps[-1] if steps else 0


def test_a_hanging_reward_lets_train_exit_soon_after_its_last_step(tmp_path):
    out = tmp_path / "run"
    args = [
        sys.executable, "-m", "aapo", "train", "--config", "default",
        "--max_steps", "2", "--num_generations", "4", "--per_device_train_batch_size", "4",
        "--gradient_accumulation_steps", "1", "--max_completion_length", "16",
        "--dataset_size", "16", "--eval_num_problems", "0", "--report_to", "[]",
        "--save_steps", "0", "--reward_timeout", "2",
        "--reward_funcs", "[format, 'rewards_for_tests:hang_forever']", "--reward_weights", "null",
        "--output_dir", str(out),
    ]  # fmt: skip
    path = os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "PYTHONPATH": path}
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 600
        while proc.poll() is None and _last_step(out / "metrics.jsonl") < 2:
            assert time.monotonic() < deadline, "the run did not reach step 2 in 600 s"
            time.sleep(0.2)
        last_step_at = time.monotonic()
        try:
            proc.wait(timeout=EXIT_WITHIN_S)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"still running {EXIT_WITHIN_S} s after its last step") from None
        log = proc.stdout.read().decode(errors="replace")
        assert proc.returncode == 0, log[-3000:]
        assert time.monotonic() - last_step_at < EXIT_WITHIN_S
        metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        assert [m["step"] for m in metrics] == [1, 2]
        assert all(m["rewards/hang_forever/timeouts"] >= 1 for m in metrics)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for its reaper counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def test_what_a_reward_started_is_gone_when_train_exits(tmp_path):
    """A reward function that starts a process and leaves it running: the process is killed
    with the reward's worker, so nothing of the run is left once `aapo train` returns."""
    pids = tmp_path / "sleepers"
    args = [
        sys.executable, "-m", "aapo", "train", "--config", "default",
        "--max_steps", "1", "--num_generations", "4", "--per_device_train_batch_size", "4",
        "--gradient_accumulation_steps", "1", "--max_completion_length", "8",
        "--dataset_size", "8", "--eval_num_problems", "0", "--report_to", "[]",
        "--reward_funcs", "[format, 'rewards_for_tests:start_sleeper']", "--reward_weights", "null",
        "--output_dir", str(tmp_path / "run"),
    ]  # fmt: skip
    path = os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "PYTHONPATH": path, "AAPO_SLEEPER_PIDS": str(pids)}
    try:
        done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        started = [int(pid) for pid in pids.read_text().split()]
        assert started  # the reward ran and started its sleeps
        deadline = time.monotonic() + 10
        while any(map(_alive, started)) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert [pid for pid in started if _alive(pid)] == []
    finally:
        for pid in [int(p) for p in pids.read_text().split()] if pids.exists() else []:
            if _alive(pid):
                os.kill(pid, 9)
