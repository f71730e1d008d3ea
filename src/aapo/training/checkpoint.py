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
    trainer_state.json    the step, the number of processes, each file's size in bytes, and
                          what the trainer adds (data cursor, config)

which is all that `--resume` needs to continue exactly where the run stopped. The `.pt` files
are read with `torch.load(weights_only=True)`, which builds only tensors and plain Python
values; a file that would need anything else (a pickled object, e.g. a checkpoint from an
older aapo or one crafted to run code) is refused, naming the file.

Nothing read back is trusted unchecked: `read_trainer_state` checks every field's type and
range and the step against the folder's name; `check_checkpoint` the process count and each
file against its recorded size (no file is read: cheap enough to run before any model loads);
`check_position` the step and data cursor against the run's length and batch layout; and
`load_checkpoint` reads each file as its format, reporting a damaged one as corrupt (not as
"could run code"), and matches weights and optimizer state to the model by name and shape. A
failure names the file and the field. Bit flips inside tensor data are not detected (hashing
a 7B run's optimizer state at every save costs about a minute).

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

from aapo.files import read_json_object
from aapo.messages import shown
from aapo.training.config import TrainConfig
from aapo.training.fields import resumable_fields

PREFIX = "checkpoint-"
STATE = "trainer_state.json"
WEIGHTS = "model.safetensors"
OPTIMIZER = "optimizer.pt"
SCHEDULER = "scheduler.pt"


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
            _save_weights(weights, tmp / WEIGHTS)
            _save_torch(optim, tmp / OPTIMIZER)
            _save_torch(scheduler.state_dict(), tmp / SCHEDULER)
        accelerator.wait_for_everyone()
        _save_torch(rng, tmp / f"rng_{accelerator.process_index}.pt")
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            files = {p.name: p.stat().st_size for p in sorted(tmp.iterdir())}
            state = {
                "step": step,
                "num_processes": accelerator.num_processes,
                "files": files,  # sizes, checked on load: a truncated file is found by name
                **(extra or {}),
            }
            (tmp / STATE).write_text(json.dumps(state, indent=2), encoding="utf-8")
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
    """Restore weights, optimizer, scheduler and this process's RNG; return trainer_state.
    Everything is read and checked before anything is restored; a failure names the file."""
    state = check_checkpoint(path, accelerator.num_processes)
    weights = _load_weights(path / WEIGHTS, model)
    optimizer_state = safe_load(path / OPTIMIZER)
    _check_optimizer_state(path / OPTIMIZER, optimizer_state, optimizer)
    scheduler_state = safe_load(path / SCHEDULER)
    if not isinstance(scheduler_state, dict):
        raise CheckpointError(f"{path / SCHEDULER} holds no scheduler state")
    rng_file = path / f"rng_{accelerator.process_index}.pt"
    rng = safe_load(rng_file)
    if not isinstance(rng, dict) or not {"python", "numpy", "torch"} <= set(rng):
        raise CheckpointError(f"{rng_file} holds no RNG states")
    for file, restore in (
        (OPTIMIZER, lambda: load_full_states(model, optimizer, weights, optimizer_state)),
        (SCHEDULER, lambda: scheduler.load_state_dict(scheduler_state)),
        (rng_file.name, lambda: set_rng_state(rng)),
    ):
        try:
            restore()
        except (ValueError, TypeError, KeyError, IndexError, RuntimeError) as err:
            raise CheckpointError(
                f"{path / file} does not fit this run: {type(err).__name__}: {_first_line(err)}"
            ) from err
    return state


def read_trainer_state(path: Path) -> dict[str, Any]:
    """`trainer_state.json` of checkpoint `path`, every field it holds checked: `step` an int
    >= 1 and, in a folder named checkpoint-N, equal to N; `num_processes` an int >= 1;
    `data_cursor` an int >= 0; `config` a mapping; `files` a size in bytes per file name."""
    state_file = path / STATE
    if not state_file.exists():
        raise FileNotFoundError(f"{path} is not a complete aapo checkpoint (no {STATE})")
    state = read_json_object(state_file, CheckpointError)
    for name, required, low in (("step", True, 1), ("num_processes", True, 1),
                                ("data_cursor", False, 0)):  # fmt: skip
        value = state.get(name)
        if value is None and not required:
            continue
        if type(value) is not int or value < low:
            raise CheckpointError(
                f"{state_file}: field {name!r} must be an integer >= {low}, got {shown(value)}"
            )
    number = path.name[len(PREFIX) :]
    if path.name.startswith(PREFIX) and number.isdigit() and state["step"] != int(number):
        raise CheckpointError(
            f"{state_file}: field 'step' is {state['step']} but the folder is {path.name}"
        )
    if "config" in state and not isinstance(state["config"], dict):
        raise CheckpointError(
            f"{state_file}: field 'config' must be a mapping, got {shown(state['config'])}"
        )
    files = state.get("files", {})
    if not isinstance(files, dict) or not all(
        isinstance(k, str) and type(v) is int and v >= 0 for k, v in files.items()
    ):
        raise CheckpointError(
            f"{state_file}: field 'files' must map file names to sizes in bytes, got {shown(files)}"
        )
    return state


def check_checkpoint(path: Path, num_processes: int) -> dict[str, Any]:
    """trainer_state.json read and checked, the process count this run's, and every file the
    checkpoint needs present with the size trainer_state.json records (cheap: no file is
    read; a truncated or replaced file is found here, before any model loads)."""
    state = read_trainer_state(path)
    state_file = path / STATE
    if state["num_processes"] != num_processes:
        raise CheckpointError(
            f"{state_file}: field 'num_processes' is {state['num_processes']}: the checkpoint "
            f"was written by {state['num_processes']} processes; resume it with as many (this "
            f"run has {num_processes})"
        )
    needed = [WEIGHTS, OPTIMIZER, SCHEDULER, *(f"rng_{i}.pt" for i in range(num_processes))]
    for name in needed:
        if not (path / name).is_file():
            raise CheckpointError(f"{path / name} is missing; the checkpoint is incomplete")
    if "files" not in state:  # written before aapo recorded sizes: read, not measured
        return state
    unrecorded = sorted(set(needed) - set(state["files"]))
    if unrecorded:
        raise CheckpointError(f"{state_file}: field 'files' does not list {unrecorded}")
    for name, size in state["files"].items():
        file = path / name
        actual = file.stat().st_size if file.is_file() else None
        if actual != size:
            found = "it is missing" if actual is None else f"it has {actual}"
            raise CheckpointError(
                f"{file} is corrupt: {state_file} (field 'files') records {size} bytes, "
                f"{found}; the file was truncated or replaced after the checkpoint was written"
            )
    return state


def check_position(
    path: Path,
    state: dict[str, Any],
    total_steps: int,
    layout: Any | None = None,
    refill_rounds: int = 1,
) -> None:
    """The step and data cursor of a checkpoint this run can continue: step <= total_steps,
    and with this run's `layout` (a resume with the checkpoint's own settings), at the end of
    a generation batch (or the run's last step) with the cursor that many generation
    batches' prompts (up to `refill_rounds` times as many when batches are refilled:
    `dynamic_sampling`, `min_informative_fraction`)."""
    state_file = path / STATE
    step, cursor = state["step"], state.get("data_cursor")
    if cursor is None:
        raise CheckpointError(f"{state_file}: field 'data_cursor' is missing")
    if step > total_steps:
        raise CheckpointError(
            f"{state_file}: field 'step' is {step}, past this run's {total_steps} steps"
        )
    if layout is None:
        return
    per_batch, prompts = layout.steps_per_generation_batch, layout.generation_prompts
    if step % per_batch and step != total_steps:
        raise CheckpointError(
            f"{state_file}: field 'step' is {step}, not the end of a generation batch "
            f"({per_batch} steps each): this run never checkpoints there"
        )
    batches = -(-step // per_batch)
    low, high = batches * prompts, batches * prompts * refill_rounds
    if cursor % prompts or not low <= cursor <= high:
        expected = f"{low}" if low == high else f"a multiple of {prompts} in [{low}, {high}]"
        raise CheckpointError(
            f"{state_file}: field 'data_cursor' is {cursor}, but {batches} generation batches "
            f"of {prompts} prompts put step {step} at {expected}"
        )


def _load_weights(file: Path, model: Any) -> dict[str, torch.Tensor]:
    """model.safetensors, read whole and matched to the model's trainable weights by name,
    shape and dtype."""
    from safetensors import SafetensorError

    try:
        weights = load_file(str(file))
    except SafetensorError as err:
        raise CheckpointError(f"{file} is corrupt ({err})") from err
    expected = {n: (p.shape, p.dtype) for n, p in model.named_parameters() if p.requires_grad}
    missing, unexpected = sorted(set(expected) - set(weights)), sorted(set(weights) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"{file} does not hold this model's trainable weights (missing {missing[:3]}, "
            f"unexpected {unexpected[:3]}): a checkpoint of another model or LoRA setting?"
        )
    for name, (shape, dtype) in expected.items():
        if weights[name].shape != shape or weights[name].dtype != dtype:
            got = f"{tuple(weights[name].shape)} {weights[name].dtype}"
            raise CheckpointError(
                f"{file}: tensor {name!r} is {got}, the model's is {tuple(shape)} {dtype}"
            )
    return weights


def _check_optimizer_state(file: Path, state: Any, optimizer: Any) -> None:
    """An optimizer state_dict for this optimizer: its groups and, per parameter, state
    tensors shaped like the parameter (a full state dict keyed by name, FSDP's, is left to
    torch's own checks)."""
    if not (
        isinstance(state, dict)
        and isinstance(state.get("state"), dict)
        and isinstance(state.get("param_groups"), list)
    ):
        raise CheckpointError(f"{file} holds no optimizer state ('state' and 'param_groups')")
    params = [p for group in optimizer.param_groups for p in group["params"]]
    for key, values in state["state"].items():
        if not isinstance(key, int):
            continue
        if not 0 <= key < len(params) or not isinstance(values, dict):
            raise CheckpointError(f"{file}: state of parameter {key!r} fits no parameter")
        for name, value in values.items():
            if isinstance(value, torch.Tensor) and value.dim() and value.shape != params[key].shape:
                raise CheckpointError(
                    f"{file}: {name!r} of parameter {key} is {tuple(value.shape)}, the parameter "
                    f"is {tuple(params[key].shape)}"
                )


def safe_load(path: Path) -> Any:
    """`torch.load(weights_only=True)`: tensors and plain values only. A file that names code
    to run is refused as such; one that does not read as a torch file is reported corrupt."""
    if not path.is_file():
        raise CheckpointError(f"{path} is missing; the checkpoint is incomplete")
    try:
        return torch.load(path, weights_only=True, map_location="cpu")
    except Exception as err:
        text = str(err)
        if isinstance(err, pickle.UnpicklingError) and "Unsupported global" in text:
            why = next(line.strip() for line in text.splitlines() if "Unsupported global" in line)
            raise CheckpointError(
                f"refusing to load {path}: it holds more than tensors and plain values, so "
                f"loading it could run code ({why}). A checkpoint written by this version of "
                "aapo never does; do not resume from this one"
            ) from err
        raise CheckpointError(
            f"{path} is corrupt: it does not read as the torch file aapo wrote "
            f"({type(err).__name__}: {_first_line(err)})"
        ) from err


def _first_line(err: BaseException) -> str:
    """The line of an error's text that says what went wrong (torch wraps it in advice)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    for line in lines:
        if "error:" in line:
            return line.split("error:", 1)[1].strip()
    return lines[0] if lines else type(err).__name__


def list_checkpoints(output_dir: Path) -> list[Path]:
    """Complete checkpoints, oldest first (half-written `.tmp` directories are ignored)."""
    found = []
    for path in output_dir.glob(f"{PREFIX}*"):
        suffix = path.name[len(PREFIX) :]
        if suffix.isdigit() and (path / STATE).exists():
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
            show = [("(absent)" if v is missing else shown(v)) for v in (before, after)]
            out.append(f"{key}: {show[0]} → {show[1]}")
    return out
