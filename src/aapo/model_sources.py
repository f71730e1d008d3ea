"""Where a model comes from, and whether transformers can load it, before any weights load.

`locate(name)` turns a model name into what transformers loads: an existing directory (it must
hold `config.json`; a file is refused), or a hub id. A hub id is looked up without
transformers' retries: its `config.json` in the local Hugging Face cache, else one quick
request to the hub (no retries), so an unreachable hub costs well under a second and one line
that says what to do instead of transformers' retries and chained tracebacks. A cached model
whose hub cannot be reached is loaded from its cached snapshot. With `HF_HUB_OFFLINE` set,
only the cache is looked at.

`inspect(path, name)` then reads the located model's config (config.json only) and refuses
what transformers would refuse later, after the tokenizer and the data: an architecture it
does not know, one with no causal-LM class, one that needs the repository's own code
(`auto_map`; aapo never passes `trust_remote_code`). It returns the context length the config
declares (`max_position_embeddings`, or its alias), checked against prompt plus completion
lengths before any weights load, and the size of the weight files (for the output
directory's space check).

Left out: revisions other than the default branch; gated models' licences (reported, not
accepted); models whose config declares no context length (nothing to check).
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aapo.files import read_json_object
from aapo.messages import shown

log = logging.getLogger(__name__)
CONFIG = "config.json"
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")
HUB_TIMEOUT = 10.0  # seconds for the one request that asks the hub whether the model is there


class ModelError(ValueError):
    """A model name or directory that cannot be loaded; the message says what to do."""


@dataclass(frozen=True)
class ModelInfo:
    """What aapo knows about a model before loading its weights."""

    path: str  # what transformers loads: a local directory or a hub id
    model_type: str
    max_positions: int | None  # the context length config.json declares; None: none declared
    weights_bytes: int | None  # size of the weight files on disk; None: not local
    parameters: int | None = None  # counted from safetensors headers; None: not local/readable


def locate(name: str) -> str:
    """A local model directory, or a hub id the hub (or the cache) has; ModelError else."""
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / CONFIG).is_file():
            raise ModelError(
                f"model directory {shown(str(path))} has no {CONFIG}: give the directory "
                "save_pretrained wrote (config.json beside the weights)"
            )
        return str(path)
    if path.exists():
        raise ModelError(
            f"model path {shown(name)} is a file, not a model directory: give the directory that "
            f"holds {CONFIG} and the weights"
        )
    if _looks_like_path(name):
        raise ModelError(f"model path {shown(name)} does not exist")
    return _hub_model(name)


def _looks_like_path(name: str) -> bool:
    """A hub id is `name` or `org/name`; anything else that does not exist is a missing path."""
    return name.startswith((".", "/", "~")) or "\\" in name or name.count("/") > 1


def _hub_model(repo: str) -> str:
    from huggingface_hub import constants, get_hf_file_metadata, hf_hub_url
    from huggingface_hub import errors as hub

    download = f"download it first with `hf download {repo}` where the hub is reachable"
    try:
        cached = hub_cached_config(repo)
    except hub.HFValidationError as err:
        raise ModelError(
            f"model {shown(repo)} is neither a local directory nor a valid hub id ({err})"
        ) from err
    if constants.HF_HUB_OFFLINE:
        if cached is None:
            raise ModelError(
                f"model {shown(repo)} is not a local directory and is not in the Hugging Face "
                f"cache, and HF_HUB_OFFLINE is set: {download}, or pass a local path"
            )
        return repo
    url = hf_hub_url(repo, CONFIG, endpoint=constants.ENDPOINT)
    try:
        get_hf_file_metadata(url, timeout=HUB_TIMEOUT, retry_on_errors=False)
    except hub.GatedRepoError as err:
        if cached is not None:
            return repo
        raise ModelError(
            f"model {shown(repo)} is gated on the hub: accept its licence on its page and log in "
            "(`hf auth login`), or pass a local path"
        ) from err
    except hub.RepositoryNotFoundError as err:
        raise ModelError(
            f"model {shown(repo)} is neither a local directory nor a model on the hub (or it is "
            "private: log in with `hf auth login`)"
        ) from err
    except hub.EntryNotFoundError as err:
        raise ModelError(
            f"hub model {shown(repo)} has no {CONFIG}: not a transformers model"
        ) from err
    except Exception as err:  # the network: refused, unresolvable, timed out, a proxy's error
        if cached is not None:
            snapshot = str(Path(cached).parent)
            log.warning("the hub cannot be reached (%s); loading %s from %s", err, repo, snapshot)
            return snapshot
        raise ModelError(
            f"model {shown(repo)} is not a local directory and the hub cannot be reached "
            f"({type(err).__name__}: {err}): {download}, or pass a local path"
        ) from err
    return repo


def hub_cached_config(repo: str) -> str | None:
    """The cached config.json of a hub model, or None; HFValidationError for a bad id."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo, CONFIG)
    return found if isinstance(found, str) else None  # a sentinel marks "known absent"


def inspect(path: str, name: str) -> ModelInfo:
    """The checks of the config of the model `locate` found at `path` (module doc); `name` is
    what the user called it, for messages."""
    raw = _raw_config(path, name)
    config = _auto_config(path, name, raw)
    model_type = getattr(config, "model_type", "") or ""
    positions = getattr(config, "max_position_embeddings", None)
    weights = parameters = None
    if Path(path).is_dir():
        weights = sum(f.stat().st_size for f in Path(path).iterdir()
                      if f.is_file() and f.name.endswith(WEIGHT_SUFFIXES))  # fmt: skip
        parameters = safetensors_parameters(Path(path))
    positions = positions if isinstance(positions, int) and positions > 0 else None
    return ModelInfo(path, model_type, positions, weights, parameters)


def safetensors_parameters(folder: Path) -> int | None:
    """Parameters stored in the folder's safetensors files, read from their headers (an
    8-byte length, then JSON with each tensor's shape); None without such files or when one
    cannot be read (loading reports that)."""
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        return None
    total = 0
    try:
        for file in files:
            with file.open("rb") as handle:
                size = int.from_bytes(handle.read(8), "little")
                header = json.loads(handle.read(size))
            total += sum(math.prod(t["shape"]) for k, t in header.items() if k != "__metadata__")
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return total


def _raw_config(path: str, name: str) -> dict[str, Any]:
    """config.json as written, to see `auto_map` before transformers acts on it."""
    file = Path(path) / CONFIG
    if not file.is_file():  # a hub id that `locate` found on the hub or in the cache
        from huggingface_hub import hf_hub_download

        try:
            file = Path(hf_hub_download(path, CONFIG))
        except Exception as err:  # the network, again; `locate` reached the hub a moment ago
            raise ModelError(f"model {shown(name)}: cannot fetch its {CONFIG} ({err})") from err
    return read_json_object(file, ModelError)


def _auto_config(path: str, name: str, raw: dict[str, Any]) -> Any:
    import transformers
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING

    version = transformers.__version__
    model_type = raw.get("model_type")
    remote = "auto_map" in raw
    try:
        config = AutoConfig.from_pretrained(path, trust_remote_code=False)
    except (ValueError, KeyError) as err:
        if remote:
            raise ModelError(
                f"model {shown(name)} needs its repository's own Python code (auto_map in "
                f"{CONFIG}, model_type {shown(model_type)}); aapo never runs a model's code "
                f"(trust_remote_code): use a model whose architecture transformers {version} "
                "ships"
            ) from err
        if not model_type:
            raise ModelError(f"model {shown(name)}: {CONFIG} has no model_type") from err
        raise ModelError(
            f"model {shown(name)} has model_type {shown(model_type)}, which transformers "
            f"{version} does not know: upgrade transformers (pip install -U transformers) or use "
            "another model"
        ) from err
    except OSError as err:  # a hub id whose config could not be fetched after all
        raise ModelError(f"model {shown(name)}: cannot read its {CONFIG} ({err})") from err
    if type(config) not in MODEL_FOR_CAUSAL_LM_MAPPING:
        raise ModelError(
            f"model {shown(name)} (model_type {shown(config.model_type)}) has no causal "
            f"language-model class in transformers {version}: aapo trains decoder LMs"
        )
    if remote:
        log.warning(
            "model %s: %s has auto_map (code of its own); aapo loads transformers' %s classes "
            "and never runs that code",
            name,
            CONFIG,
            config.model_type,
        )
    return config
