"""FSDP2 through accelerate on 2 CPU processes (gloo, via torchrun) gives the 1-process gradient,
with the shipped `recipes/accelerate/fsdp.yaml` turned into launch settings by accelerate's own
launcher code; sampling the sharded policy keeps the processes in step when their completions
end at different lengths; and every shipped accelerate config is one accelerate reads, with no
key it would ignore. DeepSpeed runs are in test_deepspeed.py.

Left out: checkpoints and the final save under FSDP (they need the weights gathered on every
process; see the #15 report), FSDP1 (accelerate passes FSDP1 a `cpu:0` device
id that torch refuses on CPU)."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

import aapo

HERE = Path(__file__).resolve().parent
CONFIGS = Path(aapo.__file__).parent / "recipes" / "accelerate"


def _fsdp_env() -> dict[str, str]:
    """What `accelerate launch --config_file fsdp.yaml` exports, mixed precision off (CPU)."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils.launch import prepare_multi_gpu_env

    argv = ["--config_file", str(CONFIGS / "fsdp.yaml"), "--num_processes", "2"]
    args = launch_command_parser().parse_args([*argv, "--mixed_precision", "no", "worker.py"])
    env = prepare_multi_gpu_env(_validate_launch_command(args)[0])
    return {k: v for k, v in env.items() if k.startswith(("FSDP_", "ACCELERATE_"))}


def _launch(processes, args, fsdp, timeout=600):
    env = {
        **os.environ,
        **(_fsdp_env() if fsdp else {}),
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
        str(HERE / "fsdp_worker.py"),
        *map(str, args),
    ]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stderr[-3000:]


def _run(tmp_path, name, processes, per_device, accumulation, max_grad_norm, fsdp):
    out = tmp_path / f"{name}.pt"
    _launch(processes, [out, per_device, accumulation, max_grad_norm], fsdp)
    return torch.load(out)


def test_fsdp_on_two_processes_gives_the_one_process_gradient(tmp_path):
    one = _run(tmp_path, "one", 1, 16, 1, 0.0, fsdp=False)  # 4 prompts × G=4, no clipping
    two = _run(tmp_path, "two", 2, 8, 1, 0.0, fsdp=True)  # 2 prompts per process
    # 2 micro-batches per process (FSDP2's no-sync accumulation) and clipping to norm 1
    split = _run(tmp_path, "split", 2, 4, 2, 1.0, fsdp=True)
    assert one["distributed_type"] != "DistributedType.FSDP"
    for run in (two, split):  # really sharded: one FSDP unit per decoder layer, half each
        assert run["distributed_type"] == "DistributedType.FSDP"
        assert run["fsdp_units"] >= 5  # 4 decoder layers + the root
        assert sum(run["local_numel"].values()) < 0.6 * sum(run["full_numel"].values())
    norm = one["grad_norm"]
    assert norm > 1.0  # so clipping to 1 acts
    assert two["grad_norm"] == pytest.approx(norm, rel=1e-4)
    assert split["grad_norm"] == pytest.approx(norm, rel=1e-4)  # the norm before clipping
    clip = 1.0 / (norm + 1e-6)  # torch's clip coefficient
    # each group's prompt computed once (a prefill and a second forward call per micro-batch):
    # float32 sums in another order leave elements up to ~2e-7 apart beyond rtol
    for name, grad in one["grads"].items():
        torch.testing.assert_close(two["grads"][name], grad, rtol=1e-4, atol=1e-6, msg=name)
        # other micro-batch shapes sum in another order: ~1e-6 apart before clipping
        torch.testing.assert_close(
            split["grads"][name], grad * clip, rtol=1e-4, atol=1e-6, msg=name
        )


def test_sampling_a_sharded_policy_keeps_the_processes_in_step(tmp_path):
    out = tmp_path / "lengths.pt"
    _launch(2, ["sample", out], fsdp=True, timeout=180)  # out of step: both wait forever
    early, late = torch.load(out)
    assert early == [1] * 4  # the first token, an EOS (kept), ends process 0's completions
    assert late == [24] * 4  # process 1's run to the cap, each token a collective forward


def test_fsdp_checkpoint_resume_gives_the_uninterrupted_run(tmp_path):
    from safetensors.torch import load_file

    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    _launch(2, ["train", straight], fsdp=True)
    resumed.mkdir()
    # what a run killed during step 2 leaves behind
    shutil.copytree(straight / "checkpoint-1", resumed / "checkpoint-1")
    shutil.copy(straight / "config.yaml", resumed / "config.yaml")
    _launch(2, ["train", resumed, "resume"], fsdp=True)
    assert len((resumed / "metrics.jsonl").read_text().splitlines()) == 1  # only step 2 ran
    first = load_file(straight / "checkpoint-1" / "model.safetensors")
    final, again = (load_file(d / "model.safetensors") for d in (straight, resumed))
    assert set(final) >= set(first)
    assert any(not torch.equal(first[k], final[k]) for k in first)  # step 2 moved the weights
    for key, value in final.items():
        torch.testing.assert_close(again[key], value, rtol=0, atol=0, msg=key)


@pytest.mark.parametrize("name", ["ddp", "fsdp", "deepspeed_zero2", "deepspeed_zero3"])
def test_shipped_accelerate_configs_are_read_by_accelerate(name):
    from accelerate.commands.config.config_args import ClusterConfig
    from accelerate.commands.launch import launch_command_parser

    path = CONFIGS / f"{name}.yaml"
    config = ClusterConfig.from_yaml_file(path)  # unknown top-level keys raise
    launch_options = vars(launch_command_parser().parse_args(["x.py"]))
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    for section in ("fsdp_config", "deepspeed_config"):
        # accelerate copies these onto its launch arguments and ignores a misspelt one
        unknown = sorted(set(raw.get(section, {})) - set(launch_options))
        assert not unknown, f"{path}: {section} keys accelerate does not know: {unknown}"
    expected = {
        "ddp": "MULTI_GPU",
        "fsdp": "FSDP",
        "deepspeed_zero2": "DEEPSPEED",
        "deepspeed_zero3": "DEEPSPEED",
    }
    assert str(config.distributed_type).split(".")[-1] == expected[name]
    if name == "fsdp":
        assert config.fsdp_config["fsdp_version"] == 2
        assert config.fsdp_config["fsdp_cpu_ram_efficient_loading"] is False
    if name.startswith("deepspeed"):
        ds = config.deepspeed_config
        assert ds["zero_stage"] == int(name[-1])
        assert config.mixed_precision == "bf16"
        # the trainer writes these from the run's config (deepspeed_engine.configure)
        assert not {"gradient_accumulation_steps", "gradient_clipping"} & set(ds)
