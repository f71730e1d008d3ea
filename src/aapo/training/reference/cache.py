"""The frozen reference's rollouts as data (docs/ALGORITHMS.md §9): storage, fingerprint and lookup.

A cache is a directory: `shard-NNNNN.safetensors` files, each holding every draw of a block of
`rows_per_shard` consecutive prompts, and `manifest.json` (format version, fingerprint, layout,
reward names, each shard's sha256), written last. Every file is written to a temporary name and
renamed, so a half-written file never counts and finished shards survive a kill. Each shard
also carries the fingerprint in its header, so a rerun resumes only shards of the same setup.
Read back, every field of the manifest and of a shard's header is checked (`check_manifest`,
`read_shard_header`: types, counts, names, the layout's numbers against each other), and each
shard's tensors by dtype and shape; a failure names the file and the field.

The fingerprint names everything the stored values depend on; `ReferenceCache.open` refuses a
run that differs, naming each field with both values, and a shard whose bytes changed. A
cache imported from completions sampled elsewhere (`importer.py`) cannot vouch for
`SAMPLED_ONLY` (the weights, seed and dtype that sampled them): its fingerprint leaves them
out, its manifest's `source` names the file, and `open` checks the rest. `take` hands a step
its prompts' rewards, one fresh draw per use. Building (model, sampling, scoring) is in
`build.py`. Left out: the completion texts, and the source code of user
reward functions (their import paths are fingerprinted, their bodies are not).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, NamedTuple

import torch

from aapo.config import ConfigError
from aapo.data.rows import PromptRow
from aapo.files import atomic_write, file_sha256, read_json_object
from aapo.messages import shown
from aapo.training.fields import derived_reference_entries, reference_fields

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
FIELDS = ("rewards", "valid", "per_function", "lengths", "truncated")
FIELD_DTYPES = {
    "rewards": torch.float32,
    "valid": torch.bool,
    "per_function": torch.float32,
    "lengths": torch.int32,
    "truncated": torch.bool,
    "rows": torch.int64,
}


class ReferenceCacheError(ConfigError):
    """A cache that does not fit this run's config; the message names the field, shard or
    prompt."""


class ReferenceBatch(NamedTuple):
    """Cached reference results for B prompts, shaped as the step's own `Scored` tensors."""

    rewards: torch.Tensor  # [B, G] weighted sum (combine_rewards)
    valid: torch.Tensor  # [B, G] bool: some function applied
    per_function: torch.Tensor  # [K, B·G] NaN = not applicable
    lengths: torch.Tensor  # [B, G] completion tokens, the stopping EOS included
    truncated: torch.Tensor  # [B, G] bool: hit max_completion_length


@dataclass(frozen=True)
class Layout:
    """How rows and draws are cut into shards; part of what a shard's contents depend on."""

    num_rows: int
    rows_per_shard: int
    draws: int

    @property
    def num_shards(self) -> int:
        return math.ceil(self.num_rows / self.rows_per_shard)

    def shard_rows(self, shard: int) -> range:
        start = shard * self.rows_per_shard
        return range(start, min(start + self.rows_per_shard, self.num_rows))


# fingerprint -------------------------------------------------------------------------------


# What only aapo's own sampling can vouch for: the weights it sampled, the seed of its RNG and
# the dtype it computed in (bf16 sampling differs from fp32). An imported cache (`aapo
# reference --completions`) leaves them out and says so in `source`.
SAMPLED_ONLY = ("reference_weights", "seed", "dtype")


def reference_fingerprint(
    config: Any, reference_model: Any, rows: list[PromptRow], tokenizer: Any
) -> dict[str, Any]:
    """Every setting the reference rollouts depend on, by name, as JSON values.

    `rows` are the prepared rows (after filtering), in training order; the cache is indexed
    by their `index`, their position in this list. Under LoRA pass the base model (or the
    peft model: its adapters are left out of the weight hash).
    """
    from aapo.models import resolve_dtype
    from aapo.rollout.sampler import _eos_ids

    device = next(reference_model.parameters()).device
    sampled = {
        "reference_weights": weights_sha256(reference_model),
        "seed": config.seed,
        "dtype": str(resolve_dtype(config.dtype, device)).removeprefix("torch."),
    }
    eos_ids = _eos_ids(reference_model, tokenizer)
    return {**sampled, **run_fingerprint(config, rows, tokenizer, eos_ids)}


# derived entries left out of the fingerprint when empty: they arrived after caches were built
# without them, and empty is what those caches were built with
ABSENT_WHEN_EMPTY = ("prompt_examples",)


def run_fingerprint(
    config: Any, rows: list[PromptRow], tokenizer: Any, eos_ids: list[int]
) -> dict[str, Any]:
    """The fingerprint without `SAMPLED_ONLY`, which an imported cache is held to as strictly
    as a sampled one: every config field declared to shape the reference rollouts
    (`reference=True`, the default, so a new field is in it), by value, and the entries
    derived from the others (the prompts as rendered, the dataset's and tokenizer's hashes)."""
    from aapo.data.prompts import (
        resolve_prompt_examples,
        resolve_system_prompt,
        resolve_user_template,
    )

    derived = {
        "tokenizer": _sha256_json(sorted(tokenizer.get_vocab().items())),
        "eos_token_ids": eos_ids,
        "system_prompt": resolve_system_prompt(config.system_prompt),
        "prompt_template": resolve_user_template(config.prompt_template),
        "prompt_examples": resolve_prompt_examples(config.prompt_examples),
        "rendered_prompts": _sha256_json([row.prompt_ids for row in rows]),
        "dataset": _sha256_json([row.columns for row in rows]),
        "num_rows": len(rows),
        "reward_weights": list(config.reward_weights or [1.0] * len(config.reward_funcs)),
    }
    unknown = set(derived_reference_entries(type(config))) - set(derived) - set(SAMPLED_ONLY)
    if unknown:  # a field names an entry nothing computes: it would silently not count
        raise ValueError(f"config fields name fingerprint entries nothing computes: {unknown}")
    for name in ABSENT_WHEN_EMPTY:  # so caches built before these entries existed still match
        if not derived[name]:
            del derived[name]
    values = {
        name: getattr(config, name)
        for name in reference_fields(type(config))
        if name not in SAMPLED_ONLY
    }
    return json.loads(json.dumps({**values, **derived}))  # tuples → lists: compare as stored


def weights_sha256(model: Any) -> str:
    """sha256 over (name, dtype, shape, bytes) of every tensor; LoRA adapters left out."""
    if hasattr(model, "get_base_model"):  # peft: the reference is the base weights
        state = {
            name.replace(".base_layer.", "."): tensor
            for name, tensor in model.get_base_model().state_dict().items()
            if "lora_" not in name
        }
    else:
        state = model.state_dict()
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def describe_source(source: dict[str, Any]) -> str:
    """One line for logs, summaries and model cards on where an imported cache came from."""
    return (
        f"imported from {source['file']} ({source['sha256']}) by `aapo reference "
        f"--completions`, not sampled by aapo; not verified: {source['not_checked']}"
    )


def _sha256_json(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, default=str, ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def fingerprint_differences(stored: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    """'field: cache X, run Y' for every field that differs (or exists on one side only)."""
    out = []
    for name in sorted(set(stored) | set(wanted)):
        a, b = stored.get(name, "<absent>"), wanted.get(name, "<absent>")
        if a != b:
            out.append(f"{name}: cache {shown(a)}, run {shown(b)}")
    return out


# storage ------------------------------------------------------------------------------------


def shard_name(shard: int) -> str:
    return f"shard-{shard:05d}.safetensors"


def shard_header(fingerprint: dict[str, Any], layout: Layout, shard: int) -> dict[str, Any]:
    """What a shard records about itself, so a resumed build can trust or refuse it."""
    return {
        "format_version": FORMAT_VERSION,
        "fingerprint": fingerprint,
        "layout": vars(layout),
        "shard": shard,
    }


def write_shard(
    directory: Path, shard: int, tensors: dict[str, torch.Tensor], header: dict[str, Any]
) -> None:
    from safetensors.torch import save

    # one metadata key: safetensors writes several in no fixed order, and shards must be
    # byte-identical however they were built
    metadata = {"aapo": json.dumps(header, sort_keys=True)}
    atomic_write(directory / shard_name(shard), save(tensors, metadata=metadata))


def read_shard_header(path: Path, shard: int | None = None) -> dict[str, Any]:
    """A shard's header (`shard_header`), every field checked; `shard` is the number its
    file name says it holds."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        header = json.loads((handle.metadata() or {}).get("aapo", "{}"))
    if not isinstance(header, dict):
        raise ReferenceCacheError(f"{path}: its header must be a JSON object, got {shown(header)}")
    if not isinstance(header.get("fingerprint"), dict):
        raise _field_error(path, "fingerprint", "a mapping", header.get("fingerprint"))
    if header.get("format_version") != FORMAT_VERSION:
        raise _field_error(
            path, "format_version", str(FORMAT_VERSION), header.get("format_version")
        )
    check_layout(path, header.get("layout"))
    if type(header.get("shard")) is not int or (shard is not None and header["shard"] != shard):
        raise _field_error(path, "shard", f"{shard} (its file name's)", header.get("shard"))
    return header


def write_manifest(
    directory: Path,
    fingerprint: dict,
    layout: Layout,
    reward_names: list[str],
    info: dict,
    source: dict | None = None,
) -> Path:
    """The manifest, once every shard exists; identical whichever process writes it.
    `source` describes where an imported cache's completions came from (None: sampled by
    `aapo reference` from the weights its fingerprint names)."""
    shards = [shard_name(s) for s in range(layout.num_shards)]
    manifest = {
        "format_version": FORMAT_VERSION,
        "fingerprint": fingerprint,
        "layout": vars(layout),
        "num_shards": layout.num_shards,
        "reward_names": reward_names,
        "shards": {name: file_sha256(directory / name) for name in shards},
        "info": info,
        **({"source": source} if source is not None else {}),
    }
    path = directory / MANIFEST
    atomic_write(path, (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode())
    return path


def read_manifest(directory: Path) -> dict[str, Any]:
    """The manifest, every field checked (`check_manifest`); a failure names the field."""
    path = directory / MANIFEST
    if not path.exists():
        done = len(list(directory.glob("shard-*.safetensors"))) if directory.is_dir() else 0
        raise ReferenceCacheError(
            f"{path} does not exist: the reference cache is missing or unfinished ({done} "
            "shards written); run `aapo reference` with this run's config to build or finish it"
        )
    manifest = read_json_object(path, ReferenceCacheError)
    check_manifest(path, manifest)
    return manifest


def check_manifest(path: Path, manifest: Any) -> None:
    """Every field of a manifest as `write_manifest` writes it: the format version; the
    fingerprint and info mappings; the layout's three counts (ints >= 1); `num_shards` the
    layout's; one sha256 per shard, named as the layout numbers them; reward names unique
    strings, as many as the fingerprint's reward functions; an imported cache's `source`."""
    if not isinstance(manifest, dict):
        raise ReferenceCacheError(f"{path} must hold a JSON object, got {shown(manifest)}")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION or type(version) is not int:
        raise ReferenceCacheError(
            f"{path}: format_version {shown(version)}, this aapo reads {FORMAT_VERSION}; "
            "rebuild the cache"
        )
    for name in ("fingerprint", "info"):
        if not isinstance(manifest.get(name), dict):
            raise _field_error(path, name, "a mapping", manifest.get(name))
    layout = check_layout(path, manifest.get("layout"))
    if manifest.get("num_shards") != layout.num_shards or type(manifest["num_shards"]) is not int:
        raise _field_error(
            path, "num_shards", f"{layout.num_shards} (the layout's)", manifest.get("num_shards")
        )
    shards = manifest.get("shards")
    wanted = [shard_name(s) for s in range(layout.num_shards)]
    if not isinstance(shards, dict) or sorted(shards) != wanted:
        raise _field_error(path, "shards", f"one entry per shard ({wanted[0]}, ...)", shards)
    for name, sha in shards.items():
        if not (isinstance(sha, str) and len(sha) == 64 and set(sha) <= set("0123456789abcdef")):
            raise _field_error(path, f"shards.{name}", "a sha256 in hex", sha)
    names = manifest.get("reward_names")
    functions = manifest["fingerprint"].get("reward_funcs")
    if (
        not isinstance(names, list)
        or not names
        or not all(isinstance(n, str) and n for n in names)
        or len(set(names)) != len(names)
        or (isinstance(functions, list) and len(functions) != len(names))
    ):
        raise _field_error(
            path, "reward_names", "one unique name per reward function of the fingerprint", names
        )
    source = manifest.get("source")
    if source is not None and not (
        isinstance(source, dict)
        and all(isinstance(source.get(k), str) for k in ("file", "sha256", "not_checked"))
    ):
        raise _field_error(path, "source", "file, sha256 and not_checked (strings)", source)


def check_layout(path: Path, layout: Any) -> Layout:
    """A manifest's or shard header's `layout`: exactly Layout's three counts, ints >= 1."""
    keys = [f.name for f in fields(Layout)]
    if (
        not isinstance(layout, dict)
        or sorted(layout) != sorted(keys)
        or not all(type(layout[k]) is int and layout[k] >= 1 for k in keys)
    ):
        raise _field_error(path, "layout", f"{', '.join(keys)} (integers >= 1)", layout)
    return Layout(**layout)


def _field_error(path: Path, name: str, wanted: str, got: Any) -> ReferenceCacheError:
    return ReferenceCacheError(f"{path}: field {name!r} must be {wanted}, got {shown(got)}")


# lookup -------------------------------------------------------------------------------------


class ReferenceCache:
    """A verified cache held in memory: `[R, D, G]` tensors (R prompts, D draws)."""

    def __init__(
        self, path: Path, manifest: dict, tensors: dict[str, torch.Tensor], problems: list[str]
    ) -> None:
        self.path = path
        self.layout = Layout(**manifest["layout"])
        self.reward_names: list[str] = manifest["reward_names"]
        self.tensors = tensors
        self.problems = problems  # for error messages
        self.source: dict[str, Any] | None = manifest.get("source")  # None: sampled by aapo

    @classmethod
    def open(
        cls,
        path: str | Path,
        fingerprint: dict[str, Any],
        problems: list[str] | None = None,
        reward_names: list[str] | None = None,
    ) -> ReferenceCache:
        """Check the manifest against `fingerprint` (and the run's `reward_names`, when
        given) and every shard against its checksum, dtypes and shapes.

        An imported cache is checked on every field but `SAMPLED_ONLY`, which it cannot
        vouch for (its `source` says so). `problems` (the rows' problem texts, optional) lets
        running out of draws name the prompt."""
        directory = Path(path)
        manifest = read_manifest(directory)
        if reward_names is not None and manifest["reward_names"] != list(reward_names):
            raise ReferenceCacheError(
                f"{directory / MANIFEST}: field 'reward_names' is "
                f"{shown(manifest['reward_names'])}, this run's rewards are {shown(reward_names)}"
            )
        if manifest.get("source") is not None:
            fingerprint = {k: v for k, v in fingerprint.items() if k not in SAMPLED_ONLY}
        differences = fingerprint_differences(manifest["fingerprint"], fingerprint)
        if differences:
            raise ReferenceCacheError(
                f"reference cache {directory} was built with other settings; differing "
                "fields:\n  " + "\n  ".join(differences)
            )
        parts = [cls._load_shard(directory, name, sha) for name, sha in manifest["shards"].items()]
        tensors = {key: torch.cat([part[key] for part in parts]) for key in (*FIELDS, "rows")}
        layout = Layout(**manifest["layout"])
        shape = (layout.num_rows, layout.draws, fingerprint["num_generations"])
        if not torch.equal(tensors.pop("rows"), torch.arange(layout.num_rows)) or any(
            value.shape[:3] != shape for value in tensors.values()
        ):
            raise ReferenceCacheError(
                f"reference cache {directory}: its shards do not hold rows 0..{layout.num_rows - 1}"
                f" once each with {layout.draws} draws of G={shape[2]}; rebuild it"
            )
        K = len(manifest["reward_names"])
        if tensors["per_function"].shape[3:] != (K,):
            raise ReferenceCacheError(
                f"reference cache {directory}: its shards score "
                f"{tuple(tensors['per_function'].shape[3:])} functions, the manifest names {K}"
            )
        return cls(directory, manifest, tensors, list(problems or []))

    @staticmethod
    def _load_shard(directory: Path, name: str, sha256: str) -> dict[str, torch.Tensor]:
        from safetensors.torch import load

        path = directory / name
        if not path.exists():
            raise ReferenceCacheError(f"reference cache shard {path} is missing")
        data = path.read_bytes()
        if hashlib.sha256(data).hexdigest() != sha256:
            raise ReferenceCacheError(
                f"reference cache shard {path} is corrupted: its sha256 differs from "
                f"{directory / MANIFEST}; delete the shard and the manifest and rerun "
                "`aapo reference` to rebuild it"
            )
        tensors = load(data)
        if sorted(tensors) != sorted((*FIELDS, "rows")) or any(
            tensors[key].dtype != dtype for key, dtype in FIELD_DTYPES.items()
        ):
            found = {key: str(value.dtype) for key, value in tensors.items()}
            raise ReferenceCacheError(
                f"reference cache shard {path} does not hold {sorted(FIELD_DTYPES)} with "
                f"their dtypes (found {shown(found)}); rebuild it"
            )
        return tensors

    @property
    def draws(self) -> int:
        return self.layout.draws

    def require_draws(self, needed: int) -> None:
        """Fail before training, not at the step that runs out, when a run will meet its
        prompts more often than the cache has draws."""
        if needed > self.layout.draws:
            raise ReferenceCacheError(
                f"this run meets each prompt up to {needed} times (epochs) but reference cache "
                f"{self.path} has {self.layout.draws} draws per prompt; rebuild it with "
                f"reference_draws >= {needed}"
            )

    def take(self, row_indices: list[int], uses: list[int]) -> ReferenceBatch:
        """Draw `uses[i]` of prompt `row_indices[i]` (the lead passes the epoch it is met in)."""
        if len(row_indices) != len(uses):
            raise ValueError(f"{len(row_indices)} row indices but {len(uses)} uses")
        for row, use in zip(row_indices, uses, strict=True):
            if not 0 <= row < self.layout.num_rows:
                raise ReferenceCacheError(
                    f"row {row} is outside the reference cache's {self.layout.num_rows} prompts"
                )
            if not 0 <= use < self.layout.draws:
                problem = self.problems[row] if row < len(self.problems) else f"row {row}"
                raise ReferenceCacheError(
                    f"reference cache {self.path} has {self.layout.draws} draws per prompt; "
                    f"draw {use} of prompt {shown(problem)} (row {row}) was asked for. "
                    "Rebuild it with a larger reference_draws"
                )
        rows, draws = torch.tensor(row_indices), torch.tensor(uses)
        picked = {key: value[rows, draws] for key, value in self.tensors.items()}  # [B, G, ...]
        return ReferenceBatch(
            rewards=picked["rewards"],
            valid=picked["valid"],
            per_function=picked["per_function"].reshape(-1, len(self.reward_names)).T,
            lengths=picked["lengths"],
            truncated=picked["truncated"],
        )
