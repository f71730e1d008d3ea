"""DeepSpeed ZeRO-2 through accelerate on 2 CPU processes (DeepSpeed's CPU accelerator, gloo, via
torchrun) gives the 1-process gradient, norm and update, with the launch settings accelerate's
own launcher code makes from the shipped `recipes/accelerate/deepspeed_zero2.yaml` (mixed
precision off: CPU); `accelerate launch ... -m aapo train` runs to a saved model; ZeRO-3 is
refused before any model loads. Skipped where deepspeed is not installed (`pip install
aapo[deepspeed]`); CI does not install it.

What each run shows: the full gradient DeepSpeed holds at the step (so the loss reached it
unscaled: DeepSpeed did not divide by the accumulation count again), the norm it reports, the
norm of the clipped gradient its optimizer received, that exactly one optimizer step ran
(accumulation boundaries), and the weights after the step.
"""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import aapo

pytest.importorskip("deepspeed", reason="DeepSpeed is not installed (pip install aapo[deepspeed])")

HERE = Path(__file__).resolve().parent
CONFIGS = Path(aapo.__file__).parent / "recipes" / "accelerate"
ONE = {"processes": 1, "per_device": 16, "accumulation": 1}  # 4 prompts × G=4
NO_CLIP = 1e9  # DeepSpeed needs a norm to clip to; this one never acts


def _deepspeed_env(stage: int) -> dict[str, str]:
    """What `accelerate launch --config_file deepspeed_zeroN.yaml` exports (mixed precision
    off)."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils.launch import prepare_deepspeed_cmd_env

    path = CONFIGS / f"deepspeed_zero{stage}.yaml"
    argv = ["--config_file", str(path), "--num_processes", "2", "--mixed_precision", "no"]
    args, defaults, _ = _validate_launch_command(launch_command_parser().parse_args([*argv, "w"]))
    args.deepspeed_fields_from_accelerate_config = ",".join(defaults.deepspeed_config)
    _, env = prepare_deepspeed_cmd_env(args)
    return {k: v for k, v in env.items() if k.startswith("ACCELERATE_")}


def _env(stage: int | None) -> dict[str, str]:
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("ACCELERATE_")},
        **(_deepspeed_env(stage) if stage else {}),
        "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
        "OMP_NUM_THREADS": "1",
    }


def _launch(tmp_path, name, processes, per_device, accumulation, max_grad_norm, stage=None):
    out = tmp_path / f"{name}.pt"
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone",
        f"--nproc_per_node={processes}", str(HERE / "deepspeed_worker.py"),
        str(out), str(per_device), str(accumulation), str(max_grad_norm),
    ]  # fmt: skip
    return out, subprocess.run(cmd, env=_env(stage), capture_output=True, text=True, timeout=900)


def _run(*args, **kwargs) -> dict:
    out, result = _launch(*args, **kwargs)
    assert result.returncode == 0, result.stderr[-3000:]
    return torch.load(out)


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    """The 1-process references: unclipped, and clipped to norm 1."""
    tmp = tmp_path_factory.mktemp("plain")
    return _run(tmp, "one", **ONE, max_grad_norm=NO_CLIP), _run(
        tmp, "clip", **ONE, max_grad_norm=1.0
    )


def test_zero2_on_two_processes_gives_the_one_process_step(plain, tmp_path):
    one, one_clipped = plain
    norm = one["grad_norm"]
    assert norm > 1.0  # so clipping to 1 acts
    two = _run(tmp_path, "two", 2, 8, 1, NO_CLIP, stage=2)  # 2 prompts per process
    # 2 micro-batches per process, accumulated by DeepSpeed, clipped by it to norm 1
    split = _run(tmp_path, "split", 2, 4, 2, 1.0, stage=2)
    for run, reference, clipped in ((two, one, norm), (split, one_clipped, 1.0)):
        assert run["distributed_type"] == "DistributedType.DEEPSPEED"
        assert run["optimizer_steps"] == 1  # one step for the 2 micro-batches, not two
        assert run["grad_norm"] == pytest.approx(norm, rel=1e-4)  # the norm before clipping
        assert run["clipped_norm"] == pytest.approx(clipped, rel=1e-4)
        # DeepSpeed's own gradient, before clipping. Its bucketed all-reduce and the other
        # micro-batch shapes sum in another order: up to ~2e-6 apart where the largest entry
        # is ~1.2; a loss divided by the accumulation count again would be half of it
        for name, grad in one["grads"].items():
            torch.testing.assert_close(run["grads"][name], grad, rtol=1e-4, atol=1e-5, msg=name)
        # Adam's first step moves a weight by about lr (1e-6); a second optimizer step would
        # move it another 1e-6, ten times the tolerance
        for name, weight in reference["weights"].items():
            torch.testing.assert_close(run["weights"][name], weight, rtol=1e-5, atol=1e-7)
    moved = [(one_clipped["weights"][n] - w).abs().max() for n, w in _initial(plain).items()]
    assert max(moved) > 9e-7  # the weights compared are not the untouched initial ones


def _initial(plain) -> dict[str, torch.Tensor]:
    from aapo.models import load_model

    names = plain[0]["weights"]
    return {n: p.detach() for n, p in load_model("bundled").named_parameters() if n in names}


def test_accelerate_launch_trains_and_saves_under_zero2(tmp_path):
    """The user's command, end to end: sampling, reference, update, final save."""
    run = tmp_path / "run"
    cmd = [
        sys.executable, "-m", "accelerate.commands.launch",
        "--config_file", str(CONFIGS / "deepspeed_zero2.yaml"), "--num_processes", "2",
        "--mixed_precision", "no", "-m", "aapo", "train", "--max_steps", "2",
        "--save_steps", "0", "--eval_num_problems", "0", "--dataset_size", "32",
        "--num_generations", "4", "--per_device_train_batch_size", "4",
        "--gradient_accumulation_steps", "2", "--max_completion_length", "12",
        "--report_to", "[]", "--output_dir", str(run),
    ]  # fmt: skip
    result = subprocess.run(cmd, env=_env(None), capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    steps = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [s["step"] for s in steps] == [1, 2]
    assert all(math.isfinite(s["grad_norm"]) and math.isfinite(s["loss"]) for s in steps)
    from aapo.models import load_model

    saved = dict(load_model(str(run)).named_parameters())  # the whole model, not a shard
    assert {n: p.shape for n, p in saved.items()} == {
        n: p.shape for n, p in load_model("bundled").named_parameters()
    }


def test_zero3_is_refused_before_any_model_loads(tmp_path):
    _, result = _launch(tmp_path, "zero3", 2, 4, 2, 1.0, stage=3)
    assert result.returncode != 0
    assert (
        "DeepSpeed ZeRO-3 is not supported: under ZeRO-3 transformers partitions" in result.stderr
    )
    assert "Loading weights" not in result.stderr
