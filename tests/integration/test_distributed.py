"""2-process CPU training (gloo, via torchrun) gives the same gradient as 1 process, and as 1
process with 4 micro-batches: the token normaliser and batch-level advantage statistics are
global (docs/ALGORITHMS.md §4.4)."""

import os
import subprocess
import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent


def _run(tmp_path, name, processes, per_device, accumulation):
    out = tmp_path / f"{name}.pt"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
        "OMP_NUM_THREADS": "1",
        "ACCELERATE_USE_CPU": "true",  # what `accelerate launch --cpu` sets
    }
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={processes}",
        str(HERE / "grad_worker.py"),
        str(out),
        str(per_device),
        str(accumulation),
    ]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return torch.load(out)


def test_two_processes_and_micro_batches_give_the_one_process_gradient(tmp_path):
    one = _run(tmp_path, "one", 1, 16, 1)  # 4 prompts × G=4 in one micro-batch
    two = _run(tmp_path, "two", 2, 8, 1)  # 2 prompts per process
    split = _run(tmp_path, "split", 1, 4, 4)  # 4 micro-batches of 4 completions
    assert any(g.abs().sum() > 0 for g in one.values())
    for name, grad in one.items():
        torch.testing.assert_close(two[name], grad, rtol=1e-4, atol=1e-7, msg=name)
        torch.testing.assert_close(split[name], grad, rtol=1e-4, atol=1e-7, msg=name)
