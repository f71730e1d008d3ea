"""`aapo reference`: sample and score the frozen reference's rollouts once, into a cache.

The reference is the model as loaded (under LoRA that is the base the adapters sit on). Rows
are loaded and filtered exactly as training loads them, and the cache is indexed by position
in that list. Shards are independent units of work: shard s is sampled with torch's RNG seeded
from (seed, s), so its contents do not depend on which process builds it, in what order, or
whether an earlier attempt was killed. Processes (`accelerate launch`) take shards round-robin
and skip the ones already on disk; whichever process sees the last shard land writes the
manifest. Scoring goes through the trainer's `RewardScorer` in chunks of a step's size, so
timeouts and "not applicable" scores behave as during a step. One build writes a folder at a
time: process 0 of a build holds its lock (`run_dir.claim`) until every process of the launch
is done, its other processes share it, and a second build meets it and is refused; processes
that split the work by hand (`process_index` given) share it the same way, process 0 taking
it.

`sampler: vllm` (`aapo reference --sampler vllm`, the route on GPUs) samples the shards with an
in-process vLLM engine loaded from the model's directory, sized for `reference_batch_size`
sequences at once; the fingerprint's weight hash still comes from the weights loaded here (the
engine's own copy is not read back), which are then freed before the engine starts. The engine
draws each call's seed from torch's RNG, so the shard seeding above holds as for the other
samplers, and its prefix cache is emptied before each shard, so no shard reuses KV blocks
another one computed: a shard's bytes do not depend on which process, or which attempt, built
it (given the same threads, engine options and free memory on CPU, which size its batches).
Every process starts its engine, even one with no shard left: vLLM builds its process groups
over the launch's processes, a collective. The sampler is not in the fingerprint (it draws from
the same distribution), so a cache filled by the engine serves runs that sample with `group`
or `hf`, and the reverse. Completions sampled elsewhere (SGLang, a serving fleet) are imported
by `importer.py`.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from aapo.algorithms import combine_rewards
from aapo.config import ConfigError
from aapo.data.rows import PromptRow
from aapo.models import inspect_model, load_model, load_tokenizer, precision_plan, training_device
from aapo.rewards.scoring import RewardScorer
from aapo.rollout.sampler import Sample, Sampler, SamplingParams
from aapo.training import builders, preflight, run_dir
from aapo.training.config import TrainConfig
from aapo.training.reference.cache import (
    MANIFEST,
    Layout,
    ReferenceCacheError,
    fingerprint_differences,
    read_manifest,
    read_shard_header,
    reference_fingerprint,
    shard_header,
    shard_name,
    write_manifest,
    write_shard,
)
from aapo.training.scored import probe, score

log = logging.getLogger("aapo")


def shard_seed(seed: int, shard: int) -> int:
    """A 63-bit torch seed for one shard; distinct shards get unrelated streams."""
    digest = hashlib.sha256(f"aapo-reference:{seed}:{shard}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def build_reference_cache(
    config: TrainConfig, process_index: int | None = None, num_processes: int | None = None
) -> Path:
    """Fill `config.reference_cache` with this process's shards; return the directory.

    `process_index`/`num_processes` default to the accelerate launch's; pass them to split
    the work by hand."""

    _check_options(config)
    config = builders.prepare_config(config)
    precision = precision_plan(config.dtype, training_device())
    # as the trainer: reads accelerate launch's settings (--cpu, ...), autocast included
    state = builders.build_accelerator(precision)
    index = state.process_index if process_index is None else process_index
    count = state.num_processes if num_processes is None else num_processes

    # one build at a time: its process 0 holds the folder's lock for all of its processes
    lock = run_dir.claim(
        config.reference_cache, "aapo reference", state, main=index == 0, option="reference_cache"
    )
    try:
        scorer = builders.build_scorer(config)  # first: a bad reward fails before loading
        try:
            directory = _fill(config, scorer, state, precision.param_dtype, index, count)
        finally:
            scorer.close()
        state.wait_for_everyone()  # the lock outlives every process's last shard
        return directory
    finally:
        if lock is not None:
            lock.release()


def _fill(
    config: TrainConfig,
    scorer: RewardScorer,
    accelerator: Any,
    dtype: torch.dtype,
    index: int,
    count: int,
) -> Path:
    with accelerator.main_process_first():  # smollm2-135m converts once
        info = inspect_model(config.model_name_or_path)  # config.json only
    model_path = info.path
    if config.sampler == "vllm":  # what the engine cannot do is refused before any load
        from aapo.training.rollout_engine import check_vllm_options

        check_vllm_options(config, model_path, accelerator.device.type)
    tokenizer = load_tokenizer(model_path)
    data = builders.build_data(config, tokenizer, config.batch_layout(count))
    preflight.check_context(config, data, info)
    probe(scorer, data.rows, tokenizer)  # each reward once, on real rows
    model = load_model(model_path, dtype, accelerator.device)  # the weights training loads
    model.eval()
    model.requires_grad_(False)
    rows = data.rows
    fingerprint = reference_fingerprint(config, model, rows, tokenizer)
    rows_per_shard = max(1, config.reference_batch_size // config.num_generations)
    draws = config.reference_draws or data.epochs_started
    layout = Layout(len(rows), rows_per_shard, draws)
    directory = Path(config.reference_cache)
    directory.mkdir(parents=True, exist_ok=True)
    if finished(directory, fingerprint, layout):
        log.info("reference cache %s is complete; nothing to do", directory)
        return directory

    done = done_shards(directory, fingerprint, layout)
    mine = range(index, layout.num_shards, count)  # round-robin
    todo = [s for s in mine if s not in done]
    already = len(mine) - len(todo)
    plan = f"{layout}, G={config.num_generations}, {layout.num_shards} shards"
    log.info(
        "reference cache %s: %s; process %d/%d builds %d of %d shards (%d already done)",
        directory, plan, index, count, len(todo), layout.num_shards, already,
    )  # fmt: skip
    if config.sampler == "vllm":
        del model  # hashed already; the engine loads its own copy (on a GPU: for its memory)
        sampler = _engine_sampler(config, model_path, accelerator)
    else:
        sampling_model = accelerator.prepare_model(model, evaluation_mode=True)  # autocast
        sampler = builders.build_sampler(
            config, sampling_model, tokenizer, config.reference_batch_size
        )
    bar = tqdm(total=len(mine), initial=already, desc="reference", disable=index != 0)
    for shard in todo:
        shard_rows = [rows[i] for i in layout.shard_rows(shard)]
        tensors = sample_shard(sampler, scorer, shard_rows, config, layout.draws, shard)
        tensors["rows"] = torch.tensor(list(layout.shard_rows(shard)), dtype=torch.int64)
        write_shard(directory, shard, tensors, shard_header(fingerprint, layout, shard))
        bar.update(1)
    bar.close()
    log_reward_events(scorer)
    if len(done_shards(directory, fingerprint, layout)) == layout.num_shards:
        _finish(directory, fingerprint, layout, scorer.names, config)
    return directory


def _engine_sampler(config: TrainConfig, model_path: str, accelerator: Any) -> Sampler:
    """An engine on the model's directory, sized for `reference_batch_size` sequences; every
    call's seed comes from torch's RNG (`sample_shard` seeds it), not from the engine's."""
    from aapo.training.rollout_engine import engine_sampler

    device = accelerator.device.type
    if device == "cuda":
        torch.cuda.empty_cache()  # the loaded copy's blocks, for the engine's KV cache
    return engine_sampler(config, model_path, device, config.seed, config.reference_batch_size)


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
    sampler: Sampler,
    scorer: RewardScorer,
    rows: list[PromptRow],
    config: TrainConfig,
    draws: int,
    shard: int,
) -> dict[str, torch.Tensor]:
    """Sample D groups of G for each of the P rows, seeded by (seed, shard), and score them."""
    params = SamplingParams(
        config.num_generations, config.temperature, config.top_p, config.max_completion_length
    )
    prompts = [row.prompt_ids for row in rows for _ in range(draws)]  # [P·D], row-major
    engine = getattr(sampler, "engine", None)  # VLLMSampler: seeded from torch's CPU RNG
    if engine is not None:
        engine.reset_prefix_cache()  # no KV blocks from another shard
    model = getattr(sampler, "model", None)  # the other samplers: over a model
    device = next(model.parameters()).device if model is not None else torch.device("cpu")
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(shard_seed(config.seed, shard))
        samples = [s for group in sampler.generate(prompts, params) for s in group]  # [P·D·G]
    return shard_tensors(scorer, rows, samples, config, draws)


def shard_tensors(
    scorer: RewardScorer,
    rows: list[PromptRow],
    samples: list[Sample],
    config: TrainConfig,
    draws: int,
) -> dict[str, torch.Tensor]:
    """Score the P rows' samples ([P·D·G]: prompt, draw, completion) into a shard's tensors;
    the one path for sampled and imported completions."""
    G, P, K = config.num_generations, len(rows), len(scorer.names)
    per_function = _score(scorer, rows, samples, draws * G, _scoring_chunk(config))  # [K, N]
    rewards, valid = combine_rewards(per_function, scorer.weights, names=scorer.names)
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
    scorer: RewardScorer, rows: list[PromptRow], samples: list, per_row: int, chunk: int
) -> torch.Tensor:
    """[K, N] scores through the step's own reward call, about a step's worth at a time."""
    rows_per_call = max(1, chunk // per_row)
    parts = []
    for start in range(0, len(rows), rows_per_call):
        some = rows[start : start + rows_per_call]
        mine = samples[start * per_row : (start + len(some)) * per_row]
        parts.append(score(scorer, some, mine, per_row).per_function)
    return torch.cat(parts, dim=1)


def _scoring_chunk(config: TrainConfig) -> int:
    """Completions one process scores per step: reward timeouts mean the same thing here."""
    return config.per_device_train_batch_size * config.gradient_accumulation_steps


def _check_options(config: Any) -> None:
    if not config.reference_cache:
        raise ConfigError("aapo reference needs reference_cache: the directory to write")


def finished(directory: Path, fingerprint: dict, layout: Layout) -> bool:
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


def done_shards(directory: Path, fingerprint: dict, layout: Layout) -> set[int]:
    """Shards already written for this setup; a shard from another setup is an error."""
    done = set()
    for shard in range(layout.num_shards):
        path = directory / shard_name(shard)
        if not path.exists():
            continue
        try:
            header = read_shard_header(path, shard)
        except Exception as err:  # unreadable: not ours to trust, so it is sampled again
            log.warning("%s is unreadable (%s); it will be rebuilt", path, err)
            continue
        differences = fingerprint_differences(header["fingerprint"], fingerprint)
        differences += fingerprint_differences(header["layout"], vars(layout))
        if differences:
            raise ReferenceCacheError(
                f"{path} was built with other settings; choose another reference_cache or "
                "delete it. Differing fields:\n  " + "\n  ".join(differences)
            )
        done.add(shard)
    return done


def log_reward_events(scorer: RewardScorer) -> None:
    events = {
        key: value
        for key, value in scorer.pop_metrics().items()
        if key.endswith(("/errors", "/timeouts")) and value > 0
    }
    if events:
        log.warning("reference scoring events (scores stored as not applicable): %s", events)
