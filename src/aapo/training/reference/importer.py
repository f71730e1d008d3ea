"""`aapo reference --completions FILE.jsonl`: a reference cache from completions sampled elsewhere.

For a user who sampled the frozen reference with vLLM, SGLang or a serving fleet. The rows,
tokenizer and reward functions are the run's own (the config `aapo train` will read); only the
sampling happened elsewhere. The cache is the one `aapo reference` writes, scored through the
same `build.shard_tensors`, so `aapo train --reference_cache DIR` reads it unchanged.

A row: `problem`, `completions` (D·G strings: D draws of G, draw-major; `completion` when
D·G = 1), optional `prompt`, `answer`, and per sample `truncated`, `completion_tokens` (as
`aapo eval --completions` reads them) and `completion_ids` (the engine's token ids, the
stopping EOS included). Matching: a row belongs to the training prompt with the same `problem`
text, exactly (after the loader's filtering); a given `prompt` must equal that prompt as the
model sees it (the chat-templated text, or its token ids decoded with special tokens, as
scripts/vllm_completions.py writes it) and a given `answer` the dataset's. A problem the
dataset holds n times needs n rows, matched in order. Every training prompt needs a row:
a cache has no fallback for a missing prompt (the trainer refuses one without all its rows),
so missing prompts are counted and refused before anything is graded.

Tokens: `completion_ids` when given; else the text re-encoded with the run's tokenizer, plus
an EOS unless the sample is `truncated` (given, else: no EOS at the end of given ids, or a
re-encoded text that reaches max_completion_length). A completion longer than
max_completion_length tokens is refused: the engine ran with another cap.

What the cache claims: nothing in a file of completions shows which weights (or which seed,
temperature or top_p) produced them, so its fingerprint leaves out `SAMPLED_ONLY`, the
weights and seed, and its manifest's `source` names the file, its sha256, and what was
checked and what was taken on trust. The trainer logs that source and puts it in the run's
summary and model card. Left out: a statistical check of the completions' likelihood under
the reference weights (a forward pass over every completion, and no clear threshold), and
splitting the import over processes (it is one pass of grading).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from aapo.config import ConfigError
from aapo.data.completions import Completion, row_completions
from aapo.data.datasets import DatasetError, read_jsonl
from aapo.data.rows import PromptRow
from aapo.files import file_sha256
from aapo.locks import DirectoryLock
from aapo.messages import shown
from aapo.models import load_tokenizer, resolve_model_path
from aapo.rollout.sampler import Sample, saved_eos_ids
from aapo.training import builders
from aapo.training.config import TrainConfig
from aapo.training.reference.build import (
    done_shards,
    finished,
    log_reward_events,
    shard_tensors,
)
from aapo.training.reference.cache import (
    MANIFEST,
    Layout,
    describe_source,
    read_manifest,
    run_fingerprint,
    shard_header,
    write_manifest,
    write_shard,
)

log = logging.getLogger("aapo")
NOT_CHECKED = "the weights, seed, temperature and top_p the engine sampled with"


@dataclass(frozen=True)
class Tokens:
    """What the run's tokenizer and config say a completion's tokens may be."""

    tokenizer: Any
    eos_ids: list[int]
    cap: int  # max_completion_length

    @property
    def eos(self) -> int:
        """The EOS appended to a re-encoded text that stopped (any of them counts once)."""
        eos = self.tokenizer.eos_token_id
        return eos if eos in self.eos_ids else self.eos_ids[0]


@dataclass
class ImportedFile:
    """A checked file: every training row's samples, in training order."""

    samples: list[list[Sample]]  # [R][D·G]
    draws: int
    source: dict[str, Any]


def import_reference_completions(config: TrainConfig, path: str | Path) -> Path:
    """Grade `path`'s completions with the run's rewards into `config.reference_cache`."""
    if not config.reference_cache:
        raise ConfigError("aapo reference --completions needs reference_cache: the directory")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ConfigError("aapo reference --completions runs in one process, not under a launcher")
    config = builders.prepare_config(config)
    lock = DirectoryLock(config.reference_cache, "aapo reference --completions").acquire()
    try:
        return _import(config, path)
    finally:
        lock.release()


def _import(config: TrainConfig, path: str | Path) -> Path:
    scorer = builders.build_scorer(config)  # first: a bad reward fails before any reading
    try:
        model_path = resolve_model_path(config.model_name_or_path)
        tokenizer = load_tokenizer(model_path)
        data = builders.build_data(config, tokenizer, config.batch_layout(1))
        tokens = Tokens(
            tokenizer, saved_eos_ids(model_path, tokenizer), config.max_completion_length
        )
        imported = read_reference_file(Path(path), data.rows, tokens, config.num_generations)
        _check_draws(config, imported.draws, data.epochs_started, path)
        fingerprint = run_fingerprint(config, data.rows, tokenizer, tokens.eos_ids)
        rows_per_shard = max(1, config.reference_batch_size // config.num_generations)
        layout = Layout(len(data.rows), rows_per_shard, imported.draws)
        directory = Path(config.reference_cache)
        directory.mkdir(parents=True, exist_ok=True)
        if finished(directory, fingerprint, layout):
            _same_source(directory, imported.source)
            log.info("reference cache %s already holds this import; nothing to do", directory)
            return directory
        done_shards(directory, fingerprint, layout)  # refuses shards of another setup
        for shard in tqdm(range(layout.num_shards), desc="import", unit="shard"):
            rows = [data.rows[i] for i in layout.shard_rows(shard)]
            samples = [s for i in layout.shard_rows(shard) for s in imported.samples[i]]
            tensors = shard_tensors(scorer, rows, samples, config, imported.draws)
            tensors["rows"] = torch.tensor(list(layout.shard_rows(shard)), dtype=torch.int64)
            write_shard(directory, shard, tensors, shard_header(fingerprint, layout, shard))
        log_reward_events(scorer)
        info = {"tokenizer_from": config.model_name_or_path, "dataset_name": config.dataset_name}
        write_manifest(directory, fingerprint, layout, scorer.names, info, imported.source)
    finally:
        scorer.close()
    log.warning("reference cache %s: %s", directory, describe_source(imported.source))
    return directory


def _check_draws(config: TrainConfig, draws: int, needed: int, path: str | Path) -> None:
    if config.reference_draws is not None and draws != config.reference_draws:
        raise DatasetError(
            f"{path}: rows hold {draws} draws of G={config.num_generations} completions, but "
            f"reference_draws is {config.reference_draws}"
        )
    if config.reference_draws is None and draws < needed:  # as `aapo reference` draws
        raise DatasetError(
            f"{path}: rows hold {draws} draws of G={config.num_generations}, but this run meets "
            f"each prompt up to {needed} times (epochs); each row needs {needed} × "
            f"{config.num_generations} completions"
        )


def _same_source(directory: Path, source: dict[str, Any]) -> None:
    stored = read_manifest(directory).get("source") or {}
    if stored.get("sha256") != source["sha256"]:
        raise DatasetError(
            f"{directory / MANIFEST} holds a cache from {stored.get('file', 'sampling')} "
            f"({stored.get('sha256', 'not imported')}), not from {source['file']} "
            f"({source['sha256']}); choose another reference_cache or delete it"
        )


def read_reference_file(path: Path, rows: list[PromptRow], tokens: Tokens, G: int) -> ImportedFile:
    """Check every line and match it to a training row; refuse the file naming the line."""
    lines = read_jsonl(path)
    if not lines:
        raise DatasetError(f"completions file {path} has no rows")
    by_problem: dict[str, list[int]] = {}
    for row in rows:
        by_problem.setdefault(row.problem, []).append(row.index)
    taken: dict[int, str] = {}  # training row → the line that gave it
    samples: dict[int, list[Sample]] = {}
    counts = {"prompts_checked": 0, "completion_ids_given": 0, "completion_tokens_differ": 0}
    first: tuple[str, int] | None = None  # (line, completions) of the first row
    for where, line in lines:
        index = _match(where, line, rows, by_problem, taken, tokens.tokenizer)
        mine = _samples(where, line, tokens, counts)
        first = first or (where, len(mine))
        if len(mine) % G or len(mine) != first[1]:
            raise DatasetError(
                f"{where}: {len(mine)} completion(s); every row needs D draws × G="
                f"{G} of them, the same D for every row ({first[0]} has {first[1]})"
            )
        counts["prompts_checked"] += "prompt" in line
        taken[index], samples[index] = where, mine
    _check_all_present(path, rows, taken)
    if counts["completion_tokens_differ"]:
        log.warning(
            "%s: %d completions' completion_tokens differ from the tokens used here (the text "
            "re-encoded); give completion_ids for exact lengths", path,
            counts["completion_tokens_differ"],
        )  # fmt: skip
    source = {
        "kind": "external_completions",
        "file": str(path),
        "sha256": "sha256:" + file_sha256(path),
        "rows": len(lines),
        **counts,
        "checked": "problem, prompt and answer against the training rows; lengths against "
        "max_completion_length; rewards scored here with the run's reward functions",
        "not_checked": NOT_CHECKED,
    }
    return ImportedFile([samples[row.index] for row in rows], first[1] // G, source)


def _match(
    where: str,
    line: Any,
    rows: list[PromptRow],
    by_problem: dict[str, list[int]],
    taken: dict[int, str],
    tokenizer: Any,
) -> int:
    """The training row this line belongs to: its problem, its prompt and gold when given."""
    if not isinstance(line, dict):
        raise DatasetError(f"{where}: a row must be a JSON object, got {type(line).__name__}")
    problem = line.get("problem")
    if not isinstance(problem, str):
        raise DatasetError(f"{where}: 'problem' must be a string, got {shown(problem)}")
    candidates = by_problem.get(problem)
    if not candidates:
        raise DatasetError(
            f"{where}: problem {shown(problem)} is not among the {len(rows)} training prompts "
            "of this config (dataset_name, dataset_size, prompts within max_prompt_length)"
        )
    if "prompt" in line:
        given = line["prompt"]
        candidates = [i for i in candidates if given in _prompt_texts(rows[i], tokenizer)]
        if not candidates:
            wanted = rows[by_problem[problem][0]].rendered_prompt
            raise DatasetError(
                f"{where}: 'prompt' {shown(given)} is not the training prompt of this problem "
                f"({shown(wanted)}): the engine was given another system prompt or template"
            )
    free = [i for i in candidates if i not in taken]
    if not free:
        earlier = ", ".join(taken[i] for i in candidates)
        raise DatasetError(
            f"{where}: a duplicate row: the dataset holds this problem {len(candidates)} "
            f"time(s) and {earlier} already gave it"
        )
    gold = rows[free[0]].columns.get("answer")
    if "answer" in line and gold is not None and str(line["answer"]).strip() != str(gold).strip():
        raise DatasetError(
            f"{where}: 'answer' {shown(line['answer'])} differs from the dataset's gold "
            f"{shown(gold)}: the file was made from another version of the dataset"
        )
    return free[0]


def _prompt_texts(row: PromptRow, tokenizer: Any) -> tuple[str, str]:
    return row.rendered_prompt, tokenizer.decode(row.prompt_ids, skip_special_tokens=False)


def _samples(where: str, line: dict, tokens: Tokens, counts: dict[str, int]) -> list[Sample]:
    """The line's completions as `Sample`s with the token ids the rewards will see."""
    completions = row_completions(where, line)
    given = _given_ids(where, line, len(completions), len(tokens.tokenizer))
    out = []
    for j, (completion, ids) in enumerate(zip(completions, given, strict=True)):
        sample = _sample(completion, ids, tokens)
        if len(sample.completion_ids) > tokens.cap:
            how = "completion_ids" if ids is not None else "re-encoded text"
            raise DatasetError(
                f"{where}: completion {j} has {len(sample.completion_ids)} tokens ({how}), more "
                f"than max_completion_length={tokens.cap}: sample with max_tokens={tokens.cap}"
            )
        counts["completion_ids_given"] += ids is not None
        stated = completion.completion_tokens
        counts["completion_tokens_differ"] += stated not in (None, len(sample.completion_ids))
        out.append(sample)
    return out


def _sample(completion: Completion, ids: list[int] | None, tokens: Tokens) -> Sample:
    if ids is not None:
        truncated = completion.truncated
        if truncated is None:
            truncated = not ids or ids[-1] not in tokens.eos_ids
        return Sample(ids, completion.text, truncated)
    encoded = tokens.tokenizer.encode(completion.text, add_special_tokens=False)
    truncated = completion.truncated
    if truncated is None:  # a shorter completion can only have stopped on an EOS
        truncated = len(encoded) >= tokens.cap
    return Sample(encoded if truncated else [*encoded, tokens.eos], completion.text, truncated)


def _given_ids(where: str, line: dict, k: int, vocab: int) -> list[list[int] | None]:
    """`completion_ids`, one list of token ids per completion, checked; None when absent."""
    if "completion_ids" not in line:
        return [None] * k
    value = line["completion_ids"]
    lists = [value] if "completion" in line else value
    if not (isinstance(lists, list) and len(lists) == k and all(map(_ids_ok(vocab), lists))):
        one = "a list of token ids" if "completion" in line else f"a list of {k} lists of ids"
        raise DatasetError(
            f"{where}: 'completion_ids' must be {one} (ints in [0, {vocab})), got {shown(value)}"
        )
    return lists


def _ids_ok(vocab: int) -> Any:
    def ok(ids: Any) -> bool:
        return isinstance(ids, list) and all(
            isinstance(t, int) and not isinstance(t, bool) and 0 <= t < vocab for t in ids
        )

    return ok


def _check_all_present(path: Path, rows: list[PromptRow], taken: dict[int, str]) -> None:
    missing = [row for row in rows if row.index not in taken]
    if missing:
        shown_rows = "; ".join(f"{r.source}: {shown(r.problem)}" for r in missing[:3])
        raise DatasetError(
            f"{path} lacks {len(missing)} of the {len(rows)} training prompts (a cache needs "
            f"every prompt the run can meet), e.g. {shown_rows}"
        )
