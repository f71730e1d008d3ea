"""What crosses processes outside the tensors accelerate gathers: lists of Python objects.

Left out: tensors (`accelerator.gather`) and the model's own collectives (DDP, FSDP, DeepSpeed).
"""

from __future__ import annotations

from typing import Any


def gather_lists(accelerator: Any, items: list[Any]) -> list[Any]:
    """Every process's `items`, concatenated in process order, on every process."""
    if accelerator.num_processes == 1:
        return list(items)
    from accelerate.utils import gather_object

    return [item for part in gather_object([items]) for item in part]
