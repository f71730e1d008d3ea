"""Loading a policy (any Hugging Face causal LM, or the bundled tiny model) and its tokenizer.

The bundled model is named `bundled` (or left unset) and loads from inside the installed
package, offline, through the same `from_pretrained` path as Qwen or Llama. dtype `auto`
means float32 on CPU (bf16 matmuls are far slower there) and bfloat16 on a GPU.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

BUNDLED = "bundled"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_model_path(name_or_path: str | None) -> str:
    """`None`/`bundled` → the shipped tiny model; anything else is passed to transformers."""
    if name_or_path in (None, "", BUNDLED):
        from aapo.assets import TINY_MODEL_DIR

        return str(TINY_MODEL_DIR)
    path = Path(name_or_path)
    if (path.is_absolute() or name_or_path.startswith(".")) and not path.exists():
        raise FileNotFoundError(f"model path {name_or_path!r} does not exist")
    return name_or_path


def resolve_dtype(dtype: str, device: torch.device | str) -> torch.dtype:
    if dtype == "auto":
        return torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be 'auto' or one of {sorted(DTYPES)}, got {dtype!r}")
    return DTYPES[dtype]


def load_tokenizer(name_or_path: str | None) -> Any:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(name_or_path))
    if tokenizer.pad_token_id is None:  # Llama-style tokenizers ship without a pad token
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(
    name_or_path: str | None, dtype: str = "auto", device: torch.device | str = "cpu"
) -> Any:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(
        resolve_model_path(name_or_path), dtype=resolve_dtype(dtype, device)
    )
    return model.to(device)
