"""The reference cache: what it stores equals the step's own sampling and scoring,
it refuses a run that differs (naming the field), resumes after an interruption to the same
bytes, splits over processes without a gap or a double, and detects corruption."""

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from aapo.algorithms import combine_rewards
from aapo.data.datasets import load_problems
from aapo.data.rows import prepare_rows
from aapo.models import load_model, load_tokenizer
from aapo.rewards import get_reward_function
from aapo.rewards.scoring import RewardScorer
from aapo.rollout import SAMPLERS, SamplingParams
from aapo.training.config import TrainConfig
from aapo.training.reference.build import build_reference_cache, shard_seed
from aapo.training.reference.cache import (
    ReferenceCache,
    ReferenceCacheError,
    reference_fingerprint,
    shard_name,
    weights_sha256,
)

# 16 prompts, G=2, 2 draws; 8 sequences per generate call → 4 prompts per shard, 4 shards
TINY = dict(
    dataset_size=16,
    num_generations=2,
    max_completion_length=32,
    per_device_train_batch_size=4,
    gradient_accumulation_steps=1,
    reward_funcs=["format", "accuracy"],
    reward_weights=[0.5, 1.0],
    reference_draws=2,
    reference_batch_size=8,
    report_to=[],
)


def _config(directory: Path, **changes) -> TrainConfig:
    return TrainConfig(**{**TINY, "reference_cache": str(directory), **changes})


def _files(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


@pytest.fixture(scope="module")
def parts():
    tokenizer = load_tokenizer("bundled")
    model = load_model("bundled")
    return tokenizer, model


def _rows(config, tokenizer, prepared_for=None):
    """The run's rows; `prepared_for` renders the same problems under another config."""
    raw = load_problems(config.dataset_name, config.dataset_split, config.seed, config.dataset_size)
    shown = prepared_for or config
    rendering = (
        shown.system_prompt,
        shown.prompt_template,
        shown.max_prompt_length,
        shown.prompt_examples,
    )
    return prepare_rows(raw, tokenizer, *rendering)[0]


@pytest.fixture(scope="module")
def built(tmp_path_factory, parts):
    """One uninterrupted, single-process cache; its config; its fingerprint as a run computes it."""
    directory = tmp_path_factory.mktemp("cache") / "ref"
    config = _config(directory)
    build_reference_cache(config, process_index=0, num_processes=1)
    tokenizer, model = parts
    fingerprint = reference_fingerprint(config, model, _rows(config, tokenizer), tokenizer)
    return directory, config, fingerprint


def test_stored_rewards_equal_the_scorer_on_the_same_samples(built, parts):
    directory, config, fingerprint = built
    tokenizer, model = parts
    rows = _rows(config, tokenizer)
    shard, draws, G = 1, 2, 2
    shard_rows = rows[4:8]  # shard 1 holds prompts 4..7
    sampler = SAMPLERS[config.sampler](model, tokenizer, max_batch_size=config.reference_batch_size)
    params = SamplingParams(G, config.temperature, config.top_p, config.max_completion_length)
    torch.manual_seed(shard_seed(config.seed, shard))
    groups = sampler.generate([r.prompt_ids for r in shard_rows for _ in range(draws)], params)
    samples = [s for group in groups for s in group]  # [P·D·G]: prompt, draw, completion
    columns = {
        "problem": [r.problem for r in shard_rows for _ in range(draws * G)],
        "answer": [r.columns["answer"] for r in shard_rows for _ in range(draws * G)],
    }
    functions = [get_reward_function(name) for name in config.reward_funcs]
    scorer = RewardScorer(["format", "accuracy"], functions, config.reward_weights)
    per_function = scorer.score(
        columns["problem"],
        [s.text for s in samples],
        [s.completion_ids for s in samples],
        columns,
    )  # [K, 16]
    rewards, valid = combine_rewards(per_function, scorer.weights)

    cache = ReferenceCache.open(directory, fingerprint)
    for draw in range(draws):
        batch = cache.take([4, 5, 6, 7], [draw] * 4)
        mine = torch.tensor([(p * draws + draw) * G + g for p in range(4) for g in range(G)])
        torch.testing.assert_close(batch.rewards.reshape(-1), rewards[mine], rtol=0, atol=0)
        assert torch.equal(batch.valid.reshape(-1), valid[mine])
        torch.testing.assert_close(
            batch.per_function, per_function[:, mine], rtol=0, atol=0, equal_nan=True
        )
        lengths = [len(samples[i].completion_ids) for i in mine]
        assert batch.lengths.reshape(-1).tolist() == lengths
        assert batch.truncated.reshape(-1).tolist() == [samples[i].truncated for i in mine]
    assert rewards.abs().sum() > 0  # the comparison is not between two zero tensors


def test_take_shapes_and_draws_follow_uses(built):
    directory, _, fingerprint = built
    cache = ReferenceCache.open(directory, fingerprint)
    batch = cache.take([5, 0, 5], [1, 0, 0])
    assert batch.rewards.shape == batch.valid.shape == batch.lengths.shape == (3, 2)
    assert batch.per_function.shape == (2, 6)  # [K, B·G], group-major like the step's
    assert torch.equal(batch.rewards[0], cache.tensors["rewards"][5, 1])
    assert torch.equal(batch.rewards[2], cache.tensors["rewards"][5, 0])
    assert torch.equal(batch.per_function[:, 4:6], cache.tensors["per_function"][5, 0].T)
    # two draws of one prompt are independent samples, not copies (their lengths can all agree:
    # a solution's length follows from the problem, right or wrong; their rewards do not)
    first, second = (cache.tensors[k][:, 0] for k in ("rewards", "lengths"))
    assert not torch.equal(first, cache.tensors["rewards"][:, 1]) or not torch.equal(
        second, cache.tensors["lengths"][:, 1]
    )


def test_running_out_of_draws_names_the_prompt(built, parts):
    directory, config, fingerprint = built
    problems = [r.problem for r in _rows(config, parts[0])]
    cache = ReferenceCache.open(directory, fingerprint, problems)
    with pytest.raises(ReferenceCacheError, match="has 2 draws per prompt") as err:
        cache.take([0, 3], [1, 2])
    assert problems[3][:40] in str(err.value) and "row 3" in str(err.value)
    cache.require_draws(2)
    with pytest.raises(ReferenceCacheError, match=r"up to 3 times .* has 2 draws per prompt"):
        cache.require_draws(3)


def _perturbed(model):
    changed = load_model("bundled")
    with torch.no_grad():
        next(changed.parameters()).view(-1)[0] += 1e-3
    return changed


# each config change alone, and the fingerprint fields it must move (and only those)
CHANGES = {
    "temperature": ({"temperature": 0.7}, {"temperature"}),
    "top_p": ({"top_p": 0.9}, {"top_p"}),
    "max_completion_length": ({"max_completion_length": 33}, {"max_completion_length"}),
    "max_prompt_length": ({"max_prompt_length": 500}, {"max_prompt_length"}),
    "num_generations": ({"num_generations": 4}, {"num_generations"}),
    "reward_funcs": ({"reward_funcs": ["accuracy", "format"]}, {"reward_funcs"}),
    "reward_weights": ({"reward_weights": [1.0, 1.0]}, {"reward_weights"}),
    "reward_kwargs": (
        {"reward_kwargs": {"format": {"think_in_prompt": True}}},
        {"reward_kwargs"},
    ),
    "seed": ({"seed": 7}, {"seed"}),
    "system_prompt": ({"system_prompt": "r1_think"}, {"system_prompt", "rendered_prompts"}),
    "prompt_template": (
        {"prompt_template": "Solve: {problem}"},
        {"prompt_template", "rendered_prompts"},
    ),
    # absent from a fingerprint without examples (as in caches built before the field existed)
    "prompt_examples": (
        {"prompt_examples": "boxed_arithmetic"},
        {"prompt_examples", "rendered_prompts"},
    ),
}


@pytest.mark.parametrize("name", [*CHANGES, "dataset", "reference_weights"])
def test_each_fingerprint_field_changed_alone_is_refused_by_name(built, parts, name):
    directory, config, fingerprint = built
    tokenizer, model = parts
    changes, expected = CHANGES.get(name, ({}, {name}))
    run = replace(config, **changes)
    rows = _rows(config, tokenizer, prepared_for=run)  # same problems (the seed picks them too)
    if name == "dataset":
        edited = replace(rows[3], columns={**rows[3].columns, "answer": "12345"})
        rows = [*rows[:3], edited, *rows[4:]]
    reference = _perturbed(model) if name == "reference_weights" else model
    wanted = reference_fingerprint(run, reference, rows, tokenizer)
    assert {k for k in wanted if wanted[k] != fingerprint.get(k)} == expected
    with pytest.raises(ReferenceCacheError, match="differing fields") as err:
        ReferenceCache.open(directory, wanted)
    for field in expected:
        assert f"{field}: cache {fingerprint.get(field, '<absent>')!r}"[:60] in str(err.value)


def test_lora_reference_weights_are_the_base_weights(parts):
    from peft import LoraConfig, get_peft_model

    base = load_model("bundled")
    plain = weights_sha256(base)
    lora = get_peft_model(base, LoraConfig(r=2, target_modules=["q_proj"], task_type="CAUSAL_LM"))
    with torch.no_grad():  # trained adapters do not change the reference
        for name, param in lora.named_parameters():
            if "lora_B" in name:
                param.fill_(0.5)
    assert weights_sha256(lora) == plain


def test_interrupted_build_resumes_to_the_uninterrupted_bytes(built, tmp_path):
    directory, config, fingerprint = built
    resumed = tmp_path / "ref"
    # the first attempt wrote shards 0 and 2, and died while writing shard 1
    build_reference_cache(replace(config, reference_cache=str(resumed)), 0, 2)
    (resumed / f".{shard_name(1)}.12345.tmp").write_bytes(b"half a shard")
    assert not (resumed / "manifest.json").exists()
    with pytest.raises(ReferenceCacheError, match=r"unfinished \(2 shards written\)"):
        ReferenceCache.open(resumed, fingerprint)
    build_reference_cache(replace(config, reference_cache=str(resumed)), 0, 1)
    assert _files(resumed) == _files(directory)


def test_two_processes_fill_one_cache_without_gaps_or_doubles(built, tmp_path):
    directory, config, fingerprint = built
    shared = tmp_path / "ref"
    for index in (1, 0):  # either order: each takes its shards round-robin
        build_reference_cache(replace(config, reference_cache=str(shared)), index, 2)
    assert _files(shared) == _files(directory)
    ReferenceCache.open(shared, fingerprint)  # rows 0..15, each once, checked on open


def test_a_flipped_byte_is_detected_and_the_shard_named(built, tmp_path):
    directory, _, fingerprint = built
    copy = tmp_path / "ref"
    shutil.copytree(directory, copy)
    path = copy / shard_name(2)
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(ReferenceCacheError, match=r"shard-00002\.safetensors is corrupted"):
        ReferenceCache.open(copy, fingerprint)


def test_a_directory_holding_another_setup_is_refused_by_field(built):
    _, config, _ = built
    with pytest.raises(ReferenceCacheError, match=r"temperature: cache 1\.0, run 0\.5"):
        build_reference_cache(replace(config, temperature=0.5), 0, 1)
    with pytest.raises(ReferenceCacheError, match="draws: cache 2, run 3"):
        build_reference_cache(replace(config, reference_draws=3), 0, 1)


def test_draws_needed_counts_the_epochs_a_run_starts():
    from aapo.training.builders import TrainData

    # 16 rows, 4 prompts per step: 4 steps per epoch; 10 steps meet a prompt in epochs 0, 1, 2
    assert TrainData([], 0, steps_per_epoch=4, total_steps=10).epochs_started == 3
    assert TrainData([], 0, steps_per_epoch=4, total_steps=8).epochs_started == 2
    assert TrainData([], 0, steps_per_epoch=4, total_steps=6).epochs_started == 2


# what is read back is checked before it is trusted -------------------------------------------


def _edit_manifest(directory: Path, copy: Path, edit) -> Path:
    shutil.copytree(directory, copy)
    path = copy / "manifest.json"
    manifest = json.loads(path.read_text())
    edited = edit(manifest)
    path.write_text(json.dumps(manifest if edited is None else edited))
    return path


def _shards_without_first(m):
    del m["shards"][shard_name(0)]


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda m: [m], r"manifest.json must hold a JSON object"),
        (lambda m: m.update(format_version=True), r"format_version True, this aapo reads 1"),
        (lambda m: m.update(fingerprint=[1]), r"field 'fingerprint' must be a mapping"),
        (lambda m: m.update(info="x"), r"field 'info' must be a mapping"),
        (lambda m: m["layout"].update(num_rows=-3), r"field 'layout' must be num_rows, "),
        (lambda m: m["layout"].update(draws="2"), r"field 'layout' .* got \{.*'draws': '2'"),
        (lambda m: m["layout"].update(rows_per_shard=2.5), r"field 'layout' must be"),
        (lambda m: m["layout"].update(extra=1), r"field 'layout' must be"),
        (lambda m: m.update(num_shards=5), r"field 'num_shards' must be 4 \(the layout's\)"),
        (lambda m: m.update(num_shards=4.0), r"field 'num_shards' must be 4"),
        (_shards_without_first, r"field 'shards' must be one entry per shard"),
        (
            lambda m: m["shards"].update({shard_name(1): "not a sha"}),
            r"field 'shards.shard-00001.safetensors' must be a sha256 in hex, got 'not a sha'",
        ),
        (lambda m: m.update(reward_names=["format"]), r"field 'reward_names' must be one unique"),
        (lambda m: m.update(reward_names=["a", "a"]), r"field 'reward_names'"),
        (lambda m: m.update(reward_names=[1, 2]), r"field 'reward_names' .* got \[1, 2\]"),
        (lambda m: m.update(source={"file": 3}), r"field 'source' must be file, sha256"),
    ],
)
def test_every_manifest_field_is_checked_naming_the_file_and_field(built, tmp_path, edit, message):
    directory, _, fingerprint = built
    path = _edit_manifest(directory, tmp_path / "ref", edit)
    with pytest.raises(ReferenceCacheError, match=message) as info:
        ReferenceCache.open(tmp_path / "ref", fingerprint)
    assert str(path) in str(info.value)


def test_a_cache_scored_with_other_reward_names_is_refused(built):
    directory, _, fingerprint = built
    with pytest.raises(
        ReferenceCacheError,
        match=r"'reward_names' is \['format', 'accuracy'\], this run's rewards are \['format', 'c",
    ):
        ReferenceCache.open(directory, fingerprint, reward_names=["format", "correct"])
    ReferenceCache.open(directory, fingerprint, reward_names=["format", "accuracy"])


def test_a_shard_whose_header_is_not_its_own_is_rebuilt(built, tmp_path):
    from safetensors import safe_open
    from safetensors.torch import load, save

    directory, config, _ = built
    copy = tmp_path / "ref"
    shutil.copytree(directory, copy)
    (copy / "manifest.json").unlink()  # an unfinished build, resumed
    path = copy / shard_name(1)
    with safe_open(str(path), "pt") as handle:
        header = json.loads(handle.metadata()["aapo"])
    header["shard"] = 3  # it claims another shard's place
    path.write_bytes(save(load(path.read_bytes()), metadata={"aapo": json.dumps(header)}))
    build_reference_cache(replace(config, reference_cache=str(copy)), 0, 1)
    assert _files(copy) == _files(directory)


def test_a_shard_of_other_dtypes_is_refused_even_with_a_matching_checksum(built, tmp_path):
    from safetensors import safe_open
    from safetensors.torch import load, save

    from aapo.files import file_sha256

    directory, _, fingerprint = built
    copy = tmp_path / "ref"
    shutil.copytree(directory, copy)
    path = copy / shard_name(0)
    with safe_open(str(path), "pt") as handle:
        metadata = handle.metadata()
    tensors = load(path.read_bytes())
    tensors["rewards"] = tensors["rewards"].double()
    path.write_bytes(save(tensors, metadata=metadata))
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["shards"][shard_name(0)] = file_sha256(path)  # re-signed: only the dtype is off
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ReferenceCacheError, match=r"shard-00000.safetensors does not hold .*"):
        ReferenceCache.open(copy, fingerprint)
