"""Atomic checkpoints: a checkpoint directory either exists whole or not at all.

Everything is written into `checkpoint-N.tmp` and renamed to `checkpoint-N` at the end (a
rename is atomic on POSIX), so a run killed at any moment, SIGKILL included, leaves only
complete checkpoints behind. A checkpoint holds the trainable weights, optimizer and scheduler
states, every process's RNG states and the step (the data position follows from the step and
the seed), which is all that `--resume` needs to continue exactly where the run stopped.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

PREFIX = "checkpoint-"


def rng_state() -> dict[str, Any]:
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def trainable_state(model: Any) -> dict[str, torch.Tensor]:
    """Weights that training changes (all of them, or only the LoRA adapters)."""
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    return {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items() if k in names}


def save_checkpoint(
    output_dir: Path,
    step: int,
    model: Any,
    optimizer: Any,
    scheduler: Any,
    rng: dict[str, Any],
    accelerator: Any,
    extra: dict[str, Any] | None = None,
) -> Path | None:
    """Write checkpoint-`step` atomically (process 0 writes, every process saves its RNG)."""
    final = output_dir / f"{PREFIX}{step}"
    tmp = output_dir / f"{PREFIX}{step}.tmp"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        save_file(trainable_state(model), str(tmp / "model.safetensors"))
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
    accelerator.wait_for_everyone()
    torch.save(rng, tmp / f"rng_{accelerator.process_index}.pt")
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        state = {"step": step, "num_processes": accelerator.num_processes, **(extra or {})}
        (tmp / "trainer_state.json").write_text(json.dumps(state, indent=2), encoding="utf-8")
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
    accelerator.wait_for_everyone()
    return final


def load_checkpoint(
    path: Path, model: Any, optimizer: Any, scheduler: Any, accelerator: Any
) -> dict[str, Any]:
    """Restore weights, optimizer, scheduler and this process's RNG; return trainer_state."""
    state_file = path / "trainer_state.json"
    if not state_file.exists():
        raise FileNotFoundError(f"{path} is not a complete aapo checkpoint (no trainer_state.json)")
    state = json.loads(state_file.read_text(encoding="utf-8"))
    if state["num_processes"] != accelerator.num_processes:
        raise ValueError(
            f"checkpoint {path} was written by {state['num_processes']} processes; resume it with "
            f"the same number (this run has {accelerator.num_processes})"
        )
    weights = load_file(str(path / "model.safetensors"))
    missing = set(trainable_state(model)) - set(weights)
    if missing:
        raise ValueError(
            f"checkpoint {path} lacks weights for {sorted(missing)[:3]}...; wrong model?"
        )
    model.load_state_dict(weights, strict=False)
    optimizer.load_state_dict(torch.load(path / "optimizer.pt", weights_only=False))
    scheduler.load_state_dict(torch.load(path / "scheduler.pt", weights_only=False))
    set_rng_state(torch.load(path / f"rng_{accelerator.process_index}.pt", weights_only=False))
    return state


def list_checkpoints(output_dir: Path) -> list[Path]:
    """Complete checkpoints, oldest first (half-written `.tmp` directories are ignored)."""
    found = []
    for path in output_dir.glob(f"{PREFIX}*"):
        suffix = path.name[len(PREFIX) :]
        if suffix.isdigit() and (path / "trainer_state.json").exists():
            found.append((int(suffix), path))
    return [path for _, path in sorted(found)]


def resolve_resume(output_dir: Path, resume: str) -> Path:
    if resume == "latest":
        checkpoints = list_checkpoints(output_dir)
        if not checkpoints:
            raise FileNotFoundError(f"--resume latest: no complete checkpoint in {output_dir}")
        return checkpoints[-1]
    path = Path(resume)
    if not path.is_dir():
        raise FileNotFoundError(f"--resume {resume}: no such checkpoint directory")
    return path


def rotate(output_dir: Path, keep: int | None) -> None:
    if keep is None:
        return
    checkpoints = list_checkpoints(output_dir)
    for path in checkpoints[: max(0, len(checkpoints) - keep)]:
        shutil.rmtree(path, ignore_errors=True)
