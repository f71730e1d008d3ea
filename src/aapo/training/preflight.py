"""What is checked before any weights load, from what the run already knows: the prompts,
the model's config.json (`ModelInfo`) and the output folder's disk.

`check_context`: the longest prompt plus the completion cap fit the model's positions;
`check_output_dir`: the disk holds the final model and the checkpoints kept at once.
Left out: the folder itself, made, locked and probed with a write by `run_dir.claim`; the
options' own ranges (TrainConfig); the rewards' probe (scored.probe).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

from aapo.config import ConfigError
from aapo.model_sources import ModelInfo
from aapo.training.builders import TrainData
from aapo.training.config import TrainConfig


def check_context(config: TrainConfig, data: TrainData, model: ModelInfo) -> None:
    """The longest prompt plus the completion cap must fit the model's positions (config.json's
    max_position_embeddings): refused before the weights load, not as an index error or a
    buffer sized past them during the first generation batch."""
    if model.max_positions is None:
        return
    longest = max(data.rows, key=lambda row: len(row.prompt_ids))
    prompt, positions = len(longest.prompt_ids), model.max_positions
    name, completion = "max_completion_length", config.max_completion_length
    evaluates = config.eval_num_problems or config.final_eval_problems()
    if evaluates and (config.eval_max_new_tokens or 0) > completion:
        name, completion = "eval_max_new_tokens", config.eval_max_new_tokens
    if prompt + completion <= positions:
        return
    fixes = [f"lower {name} to at most {positions - prompt}"] if prompt < positions else []
    if completion < positions:
        fixes.append(
            f"max_prompt_length to at most {positions - completion} (longer prompts are skipped)"
        )
    fix = ", or ".join(fixes) if fixes else f"lower {name} below {positions}"
    raise ConfigError(
        f"the longest prompt ({prompt} tokens, {longest.source}) plus {name} {completion} is "
        f"{prompt + completion} tokens, beyond the {positions} positions of model "
        f"{config.model_name_or_path!r} (max_position_embeddings in config.json): {fix}"
    )


def check_output_dir(
    config: TrainConfig, model: ModelInfo, total_steps: int, save_dtype: torch.dtype
) -> None:
    """`output_dir`'s disk has room for what the run writes
    there (`output_bytes`): refused now with what to do, not after the weights have loaded
    or at the first checkpoint. (That it exists and takes writes the run lock checked when it
    took the folder: `run_dir.claim`.)"""
    path = Path(config.output_dir)
    needed, parts = output_bytes(config, model, total_steps, save_dtype)
    existing = next(p for p in (path, *path.parents) if p.exists())  # its disk, made or not
    free = shutil.disk_usage(existing).free
    if needed > free:
        raise ConfigError(
            f"output_dir {str(path)!r} has {_size(free)} free on its disk, but this run writes "
            f"about {_size(needed)} there ({parts}): free space, choose another output_dir, "
            "or keep fewer checkpoints (save_total_limit, save_steps)"
        )


def output_bytes(
    config: TrainConfig, model: ModelInfo, total_steps: int, save_dtype: torch.dtype
) -> tuple[int, str]:
    """About how many bytes the run writes into output_dir at its peak, and of what: the
    final model in its saved dtype, and with `save_steps` the checkpoints kept at once
    (float32 weights and AdamW's two moments, 12 bytes a parameter), one more while the
    oldest is rotated out. Parameters from the safetensors headers, else the weight files'
    size; 0 under LoRA (adapters are small) or when neither is known (a hub id)."""
    if config.use_peft:
        return 0, "LoRA adapters"
    width = torch.tensor([], dtype=save_dtype).element_size()
    params = model.parameters or (model.weights_bytes or 0) // width
    final = params * width
    saves = (total_steps - 1) // config.save_steps if config.save_steps else 0
    kept = min(saves, (config.save_total_limit or saves) + 1)
    checkpoint = params * 12
    parts = f"the final model {_size(final)}"
    if kept:
        parts += f", {kept} checkpoints at once of {_size(checkpoint)} each"
    return final + kept * checkpoint, parts


def _size(count: float) -> str:
    units = ("B", "KB", "MB", "GB", "TB")
    step = 0
    while count >= 1000 and step < len(units) - 1:
        count, step = count / 1000, step + 1
    return f"{count:.0f} B" if step == 0 else f"{count:.1f} {units[step]}"
