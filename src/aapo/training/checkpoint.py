"""Atomic checkpoints that hold data only: a checkpoint directory exists whole or not at all,
and loading one runs no code.

Everything is written into `checkpoint-N.tmp` and renamed to `checkpoint-N` at the end (a
rename is atomic on POSIX), so a run killed at any moment, SIGKILL included, leaves only
complete checkpoints behind; an exception or Ctrl-C inside the save removes the `.tmp`
directory, so a retried save starts clean (and a Ctrl-C stays a KeyboardInterrupt, however
torch wrapped it). A checkpoint holds:

    model.safetensors     the trainable weights (all of them, or only the LoRA adapters)
    optimizer.pt          the optimizer's state_dict: tensors and plain values
    scheduler.pt          the learning-rate scheduler's state_dict: plain values
    rng_<process>.pt      each process's RNG states: python `random` and numpy as lists of
                          ints, torch and CUDA as uint8 tensors
    trainer_state.json    the step, the number of processes and what the trainer adds

which is all that `--resume` needs to continue exactly where the run stopped. The `.pt` files
are read with `torch.load(weights_only=True)`, which builds only tensors and plain Python
values; a file that would need anything else (a pickled object, e.g. a checkpoint from an
older aapo or one crafted to run code) is refused, naming the file.

`trajectory_config_differences` tells which config changes would make a resumed run differ
from the run that wrote the checkpoint.
Left out: sharded (FSDP/DeepSpeed) optimizer states.
"""

from __future__ import annotations

import errno
import json
import pickle
import random
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from aapo.training.config import TrainConfig, resumable_fields

PREFIX = "checkpoint-"


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be written or safely read; the message names the file."""


def rng_state() -> dict[str, Any]:
    """Every RNG's state as tensors and plain values (loadable with weights_only=True)."""
    version, words, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": {"version": version, "state": list(words), "gauss_next": gauss},
        "numpy": {
            "kind": str(kind),
            "keys": [int(k) for k in keys],
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    py, npy = state["python"], state["numpy"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss_next"]))
    np.random.set_state(
        (npy["kind"], np.array(npy["keys"], dtype=np.uint32), npy["pos"], npy["has_gauss"],
         npy["cached_gaussian"])
    )  # fmt: skip
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def trainable_state(model: Any) -> dict[str, torch.Tensor]:
    """Weights that training changes (all of them, or only the LoRA adapters)."""
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    return {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items() if k in names}


def _sharded(model: Any) -> bool:
    """FSDP2 keeps each parameter as a DTensor shard."""
    from torch.distributed.tensor import DTensor

    return any(isinstance(p, DTensor) for p in model.parameters())


def gathered_weights(model: Any) -> dict[str, torch.Tensor] | None:
    """Under FSDP, every weight whole, gathered from the processes' shards (a collective: every
    process calls it; process 0 gets the tensors); None when the model is not sharded."""
    if not _sharded(model):
        return None
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return {k: v.contiguous() for k, v in get_model_state_dict(model, options=options).items()}


def full_states(model: Any, optimizer: Any) -> tuple[dict, dict]:
    """The trainable weights and the optimizer state, whole (under FSDP gathered: every
    process calls this)."""
    gathered = gathered_weights(model)
    if gathered is None:
        return trainable_state(model), optimizer.state_dict()
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    names = {n for n, p in model.named_parameters() if p.requires_grad}
    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    weights = {k: v for k, v in gathered.items() if k in names}
    return weights, get_optimizer_state_dict(model, optimizer, options=options)


def load_full_states(model: Any, optimizer: Any, weights: dict, optimizer_state: dict) -> None:
    """Put whole weights and optimizer state back; under FSDP each process keeps its shard."""
    if not _sharded(model):
        model.load_state_dict(weights, strict=False)
        optimizer.load_state_dict(optimizer_state)
        return
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        set_model_state_dict,
        set_optimizer_state_dict,
    )

    options = StateDictOptions(full_state_dict=True, strict=False)
    set_model_state_dict(model, weights, options=options)
    set_optimizer_state_dict(model, optimizer, optimizer_state, options=options)


def _save_torch(obj: Any, path: Path) -> None:
    # through a Python file object, so a full disk surfaces as OSError(ENOSPC)
    with path.open("wb") as handle:
        torch.save(obj, handle)


def _save_weights(tensors: dict[str, torch.Tensor], path: Path) -> None:
    save_file(tensors, str(path))


def _chain(err: BaseException | None) -> list[BaseException]:
    """`err` and the exceptions it was raised from or while handling, outermost first."""
    out = []
    while err is not None and err not in out:
        out.append(err)
        err = err.__cause__ or err.__context__
    return out


def disk_full(err: BaseException) -> bool:
    return any(
        (isinstance(e, OSError) and e.errno == errno.ENOSPC)
        # safetensors reports the OS error inside its own exception
        or "No space left on device" in str(e)
        or "os error 28" in str(e)
        for e in _chain(err)
    )


def interrupted(err: BaseException) -> bool:
    """A Ctrl-C, possibly wrapped: torch.save turns a KeyboardInterrupt raised inside its
    write callback into a RuntimeError ("[enforce fail at inline_container.cc ...]")."""
    return any(isinstance(e, KeyboardInterrupt) for e in _chain(err))


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
    """Write checkpoint-`step` atomically (process 0 writes, every process saves its RNG).
    A full disk raises CheckpointError; any failure or interrupt removes the `.tmp` folder."""
    final = output_dir / f"{PREFIX}{step}"
    tmp = output_dir / f"{PREFIX}{step}.tmp"
    try:
        weights, optim = full_states(model, optimizer)  # every process
        if accelerator.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            _save_weights(weights, tmp / "model.safetensors")
            _save_torch(optim, tmp / "optimizer.pt")
            _save_torch(scheduler.state_dict(), tmp / "scheduler.pt")
        accelerator.wait_for_everyone()
        _save_torch(rng, tmp / f"rng_{accelerator.process_index}.pt")
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            state = {"step": step, "num_processes": accelerator.num_processes, **(extra or {})}
            (tmp / "trainer_state.json").write_text(json.dumps(state, indent=2), encoding="utf-8")
            _replace(tmp, final)
    except BaseException as err:
        if accelerator.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(err, Exception) and interrupted(err):
            raise KeyboardInterrupt from None  # a Ctrl-C, stopping as it does anywhere else
        if isinstance(err, Exception) and disk_full(err):
            raise CheckpointError(
                f"no space left on device while writing {final.name} to {output_dir}"
            ) from err
        raise
    accelerator.wait_for_everyone()
    return final


def _replace(tmp: Path, final: Path) -> None:
    """Rename `tmp` to `final`; an older `final` (a rerun of that step) goes only after."""
    old = final.with_name(final.name + ".old")
    if final.exists():
        shutil.rmtree(old, ignore_errors=True)
        final.rename(old)
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)


def load_checkpoint(
    path: Path, model: Any, optimizer: Any, scheduler: Any, accelerator: Any
) -> dict[str, Any]:
    """Restore weights, optimizer, scheduler and this process's RNG; return trainer_state."""
    state = read_trainer_state(path)
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
    optimizer_state = safe_load(path / "optimizer.pt")
    scheduler_state = safe_load(path / "scheduler.pt")
    rng = safe_load(path / f"rng_{accelerator.process_index}.pt")
    if not isinstance(rng, dict) or not {"python", "numpy", "torch"} <= set(rng):
        raise CheckpointError(f"{path}/rng_{accelerator.process_index}.pt holds no RNG states")
    load_full_states(model, optimizer, weights, optimizer_state)
    scheduler.load_state_dict(scheduler_state)
    set_rng_state(rng)
    return state


def read_trainer_state(path: Path) -> dict[str, Any]:
    """`trainer_state.json` of checkpoint `path` (its step, process count, saved config...)."""
    state_file = path / "trainer_state.json"
    if not state_file.exists():
        raise FileNotFoundError(f"{path} is not a complete aapo checkpoint (no trainer_state.json)")
    try:
        return json.loads(state_file.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{state_file} is not valid JSON ({err})") from err


def safe_load(path: Path) -> Any:
    """`torch.load(weights_only=True)`: tensors and plain values only; anything else refused."""
    if not path.is_file():
        raise CheckpointError(f"{path} is missing; the checkpoint is incomplete")
    try:
        return torch.load(path, weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as err:
        why = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(
            f"refusing to load {path}: it holds more than tensors and plain values, so loading "
            f"it could run code ({why}). A checkpoint written by this version of aapo never "
            "does; do not resume from this one"
        ) from err
    except (RuntimeError, EOFError, OSError) as err:
        raise CheckpointError(f"cannot read {path}: {err}") from err


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


def rotate(output_dir: Path, keep: int | None, newest: Path | None = None) -> None:
    """Delete all but the `keep` latest checkpoints; `newest` (the one just written) is kept
    even when later-numbered ones exist (a run resumed from an earlier step)."""
    if keep is None:
        return
    if keep < 1:
        raise ValueError(f"save_total_limit must be at least 1 (or null for all), got {keep}")
    checkpoints = list_checkpoints(output_dir)
    if newest is not None and newest.name in [p.name for p in checkpoints]:
        checkpoints = [p for p in checkpoints if p.name != newest.name]
        keep -= 1
    for path in checkpoints[: max(0, len(checkpoints) - keep)]:
        shutil.rmtree(path, ignore_errors=True)


def trajectory_config_differences(saved: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """`key: saved → new` for each changed key that alters the run's trajectory (every key
    but the fields declared `resume=True` in TrainConfig, so a new field is refused until its
    declaration says otherwise; a key absent on one side counts as changed), sorted by key."""
    resumable = resumable_fields(TrainConfig)
    missing = object()
    out = []
    for key in sorted(set(saved) | set(new)):
        if key in resumable:
            continue
        before, after = saved.get(key, missing), new.get(key, missing)
        if before != after:
            show = [("(absent)" if v is missing else repr(v)) for v in (before, after)]
            out.append(f"{key}: {show[0]} → {show[1]}")
    return out
