"""`aapo reference`: sample and score the frozen reference's rollouts once, into a cache.

The reference is the model as loaded (under LoRA that is the base the adapters sit on). Rows
are loaded and filtered exactly as training loads them, and the cache is indexed by position
in that list. Shards are independent units of work: shard s is sampled with torch's RNG seeded
from (seed, s), so its contents do not depend on which process builds it, in what order, or
whether an earlier attempt was killed. Processes (`accelerate launch`) take shards round-robin
and skip the ones already on disk; whichever process sees the last shard land writes the
manifest. Scoring goes through the trainer's `RewardScorer` in chunks of a step's size, so
timeouts and "not applicable" scores behave as during a step. Left out: vLLM sampling.
"""

from __future__ import annotations

import hashlib
import importlib
import logging
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from aapo.algorithms import combine_rewards
from aapo.config import ConfigError
from aapo.rollout.reference_cache import (
    MANIFEST,
    Layout,
    ReferenceCacheError,
    draws_needed,
    fingerprint_differences,
    read_manifest,
    read_shard_header,
    reference_fingerprint,
    shard_header,
    shard_name,
    write_manifest,
    write_shard,
)
from aapo.rollout.sampler import HFSampler, SamplingParams
from aapo.training.scoring import RewardScorer

log = logging.getLogger("aapo")


def shard_seed(seed: int, shard: int) -> int:
    """A 63-bit torch seed for one shard; distinct shards get unrelated streams."""
    digest = hashlib.sha256(f"aapo-reference:{seed}:{shard}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def build_reference_cache(
    config: Any, process_index: int | None = None, num_processes: int | None = None
) -> Path:
    """Fill `config.reference_cache` with this process's shards; return the directory.

    `process_index`/`num_processes` default to the accelerate launch's; pass them to split
    the work by hand."""
    from accelerate import Accelerator

    from aapo.training.trainer import apply_algorithm_defaults

    _check_options(config)
    for module in config.imports:  # user reward functions register themselves on import
        importlib.import_module(module)
    config = apply_algorithm_defaults(config)
    state = Accelerator()  # as the trainer: reads accelerate launch's settings (--cpu, ...)
    index = state.process_index if process_index is None else process_index
    count = state.num_processes if num_processes is None else num_processes

    scorer = _scorer(config)  # first: it sets up the grader that loading checks golds with
    model, tokenizer, rows = _reference_and_rows(config, state.device)
    fingerprint = reference_fingerprint(config, model, rows, tokenizer)
    rows_per_shard = max(1, config.reference_batch_size // config.num_generations)
    layout = Layout(len(rows), rows_per_shard, _draws(config, len(rows), count))
    directory = Path(config.reference_cache)
    directory.mkdir(parents=True, exist_ok=True)
    if _finished(directory, fingerprint, layout):
        log.info("reference cache %s is complete; nothing to do", directory)
        return directory

    done = _done_shards(directory, fingerprint, layout)
    mine = range(index, layout.num_shards, count)  # round-robin
    todo = [s for s in mine if s not in done]
    already = len(mine) - len(todo)
    plan = f"{layout}, G={config.num_generations}, {layout.num_shards} shards"
    log.info(
        "reference cache %s: %s; process %d/%d builds %d of %d shards (%d already done)",
        directory, plan, index, count, len(todo), layout.num_shards, already,
    )  # fmt: skip
    sampler = HFSampler(model, tokenizer, max_batch_size=config.reference_batch_size)
    bar = tqdm(total=len(mine), initial=already, desc="reference", disable=index != 0)
    for shard in todo:
        shard_rows = [rows[i] for i in layout.shard_rows(shard)]
        tensors = sample_shard(sampler, scorer, shard_rows, config, layout.draws, shard)
        tensors["rows"] = torch.tensor(list(layout.shard_rows(shard)), dtype=torch.int64)
        write_shard(directory, shard, tensors, shard_header(fingerprint, layout, shard))
        bar.update(1)
    bar.close()
    _log_reward_events(scorer)
    if len(_done_shards(directory, fingerprint, layout)) == layout.num_shards:
        _finish(directory, fingerprint, layout, scorer.names, config)
    return directory


def _reference_and_rows(config: Any, device: Any) -> tuple[Any, Any, list[dict]]:
    """The frozen reference (the weights as loaded), its tokenizer, and the rows as training
    loads and filters them."""
    from aapo.data.datasets import load_problems
    from aapo.models import load_model, load_tokenizer
    from aapo.training.trainer import prepare_rows

    tokenizer = load_tokenizer(config.model_name_or_path)
    model = load_model(config.model_name_or_path, config.dtype, device)
    model.eval()
    model.requires_grad_(False)
    raw = load_problems(config.dataset_name, config.dataset_split, config.seed, config.dataset_size)
    rows, _ = prepare_rows(raw, tokenizer, config)
    return model, tokenizer, rows


def _finish(
    directory: Path, fingerprint: dict, layout: Layout, names: list[str], config: Any
) -> None:
    """Every shard exists: write the manifest (identical whichever process gets here)."""
    info = {"model_name_or_path": config.model_name_or_path, "dataset_name": config.dataset_name}
    write_manifest(directory, fingerprint, layout, list(names), info)
    for stale in directory.glob(".shard-*.tmp"):  # from killed attempts; all shards exist
        stale.unlink(missing_ok=True)
    log.info("reference cache complete: %s", directory / MANIFEST)


def sample_shard(
    sampler: HFSampler,
    scorer: RewardScorer,
    rows: list[dict],
    config: Any,
    draws: int,
    shard: int,
) -> dict[str, torch.Tensor]:
    """Sample D groups of G for each of the P rows, seeded by (seed, shard), and score them."""
    G, P, K = config.num_generations, len(rows), len(scorer.names)
    params = SamplingParams(G, config.temperature, config.top_p, config.max_completion_length)
    prompts = [row["_prompt_ids"] for row in rows for _ in range(draws)]  # [P·D], row-major
    device = next(sampler.model.parameters()).device
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(shard_seed(config.seed, shard))
        samples = [s for group in sampler.generate(prompts, params) for s in group]  # [P·D·G]
    per_function = _score(scorer, rows, samples, draws * G, _scoring_chunk(config))  # [K, N]
    rewards, valid = combine_rewards(per_function, scorer.weights)
    return {
        "rewards": rewards.reshape(P, draws, G).contiguous(),
        "valid": valid.reshape(P, draws, G).contiguous(),
        "per_function": per_function.T.reshape(P, draws, G, K).contiguous(),
        "lengths": torch.tensor(
            [len(s.completion_ids) for s in samples], dtype=torch.int32
        ).reshape(P, draws, G),
        "truncated": torch.tensor([s.truncated for s in samples]).reshape(P, draws, G),
    }


def _score(
    scorer: RewardScorer, rows: list[dict], samples: list, per_row: int, chunk: int
) -> torch.Tensor:
    """[K, N] scores, with the same dataset columns the step passes, a step's worth at a time."""
    columns = {
        key: [row[key] for row in rows for _ in range(per_row)]
        for key in rows[0]
        if not key.startswith("_")
    }
    prompts = columns.get("problem", [""] * len(samples))
    parts = []
    for start in range(0, len(samples), chunk):
        part = slice(start, start + chunk)
        parts.append(
            scorer.score(
                prompts[part],
                [s.text for s in samples[part]],
                [s.completion_ids for s in samples[part]],
                {key: values[part] for key, values in columns.items()},
            )
        )
    return torch.cat(parts, dim=1)


def _scoring_chunk(config: Any) -> int:
    """Completions one process scores per step: reward timeouts mean the same thing here."""
    return config.per_device_train_batch_size * config.gradient_accumulation_steps


def _scorer(config: Any) -> RewardScorer:
    from aapo.rewards import configure_default_grader, get_reward_function
    from aapo.training.scoring import reward_name
    from aapo.training.trainer import _reward_params

    configure_default_grader(batch_timeout=max(1.0, 0.8 * config.reward_timeout))
    names = [reward_name(spec) for spec in config.reward_funcs]
    functions = [
        get_reward_function(spec, **_reward_params(spec, config)) for spec in config.reward_funcs
    ]
    return RewardScorer(names, functions, config.reward_weights, config.reward_timeout)


def _check_options(config: Any) -> None:
    if not config.reference_cache:
        raise ConfigError("aapo reference needs reference_cache: the directory to write")
    if config.reference_draws is not None and config.reference_draws < 1:
        raise ConfigError(f"reference_draws must be >= 1, got {config.reference_draws}")
    if config.reference_batch_size < 1:
        raise ConfigError(f"reference_batch_size must be >= 1, got {config.reference_batch_size}")


def _draws(config: Any, num_rows: int, num_processes: int) -> int:
    if config.reference_draws is not None:
        return config.reference_draws
    draws = draws_needed(
        num_rows,
        config.prompts_per_step(num_processes),
        config.max_steps,
        config.num_train_epochs,
    )
    log.info(
        "reference_draws unset: %d draws per prompt, what the run needs on %d process(es); "
        "set reference_draws for a run on more processes",
        draws,
        num_processes,
    )
    return draws


def _finished(directory: Path, fingerprint: dict, layout: Layout) -> bool:
    """True when a manifest for exactly this setup exists; one for another setup is an error."""
    if not (directory / MANIFEST).exists():
        return False
    manifest = read_manifest(directory)
    differences = fingerprint_differences(manifest["fingerprint"], fingerprint)
    differences += fingerprint_differences(manifest["layout"], vars(layout))
    if differences:
        raise ReferenceCacheError(
            f"{directory} already holds a reference cache built with other settings; choose "
            "another reference_cache or delete it. Differing fields:\n  " + "\n  ".join(differences)
        )
    return True


def _done_shards(directory: Path, fingerprint: dict, layout: Layout) -> set[int]:
    """Shards already written for this setup; a shard from another setup is an error."""
    done = set()
    for shard in range(layout.num_shards):
        path = directory / shard_name(shard)
        if not path.exists():
            continue
        try:
            header = read_shard_header(path)
        except Exception as err:  # unreadable: not ours to trust, so it is sampled again
            log.warning("%s is unreadable (%s); it will be rebuilt", path, err)
            continue
        differences = fingerprint_differences(header.get("fingerprint", {}), fingerprint)
        differences += fingerprint_differences(header.get("layout", {}), vars(layout))
        if differences:
            raise ReferenceCacheError(
                f"{path} was built with other settings; choose another reference_cache or "
                "delete it. Differing fields:\n  " + "\n  ".join(differences)
            )
        done.add(shard)
    return done


def _log_reward_events(scorer: RewardScorer) -> None:
    events = {
        key: value
        for key, value in scorer.pop_metrics().items()
        if key.endswith(("/errors", "/timeouts")) and value > 0
    }
    if events:
        log.warning("reference scoring events (scores stored as not applicable): %s", events)
