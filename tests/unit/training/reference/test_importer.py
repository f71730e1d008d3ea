"""`aapo reference --completions`: the reference sampler's own completions, put into the rows
`scripts/vllm_completions.py --reference_for --dry_run` writes and imported, give the cache
`aapo reference` wrote from them; the imported cache says where it came from and claims no
weights; bad files are refused naming the line; a training run reads the imported cache."""

import hashlib
import importlib.util
import json
import re
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from aapo.cli import main
from aapo.config import load_config
from aapo.data.datasets import DatasetError
from aapo.models import load_model, load_tokenizer
from aapo.rollout.sampler import saved_eos_ids
from aapo.training import builders
from aapo.training.config import TrainConfig
from aapo.training.reference import CachedReference
from aapo.training.reference.build import build_reference_cache
from aapo.training.reference.cache import (
    SAMPLED_ONLY,
    ReferenceCache,
    ReferenceCacheError,
    read_manifest,
    reference_fingerprint,
)
from aapo.training.reference.importer import (
    Tokens,
    import_reference_completions,
    read_reference_file,
)

# 16 prompts, G=2, 2 draws; 8 sequences per generate call → 4 prompts per shard. cosine reads
# the token ids, so the lengths the import uses are checked through the rewards too.
ARGS = [
    "--dataset_size", "16",
    "--num_generations", "2",
    "--max_completion_length", "24",
    "--per_device_train_batch_size", "4",
    "--gradient_accumulation_steps", "1",
    "--reward_funcs", '["format", "accuracy", "cosine"]',
    "--reward_weights", "[0.5, 1.0, 0.25]",
    "--reference_draws", "2",
    "--reference_batch_size", "8",
    "--report_to", "[]",
    "--eval_num_problems", "0",
    "--save_steps", "0",
    "--max_steps", "8",
]  # fmt: skip
G, D = 2, 2
SCRIPT = Path(__file__).resolve().parents[4] / "scripts" / "vllm_completions.py"


def _config(directory: Path, *more: str) -> TrainConfig:
    return load_config(TrainConfig, "default", [*ARGS, "--reference_cache", str(directory), *more])


class Recording:
    """The reference sampler, keeping every sample it hands out, in order."""

    def __init__(self, inner) -> None:
        self.inner, self.samples = inner, []
        self.model = inner.model

    def generate(self, prompts, params):
        groups = self.inner.generate(prompts, params)
        self.samples += [s for group in groups for s in group]
        return groups


@pytest.fixture(scope="module")
def sampled(tmp_path_factory):
    """`aapo reference`'s cache, its rows, and every sample it drew ([R·D·G], row-major)."""
    directory = tmp_path_factory.mktemp("sampled") / "ref"
    config = _config(directory)
    made, real = [], builders.build_sampler

    def recording(*args, **kwargs):
        made.append(Recording(real(*args, **kwargs)))
        return made[-1]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(builders, "build_sampler", recording)
        build_reference_cache(config, process_index=0, num_processes=1)
    tokenizer = load_tokenizer("bundled")
    data = builders.build_data(config, tokenizer, config.batch_layout(1))
    return directory, config, data.rows, made[0].samples, tokenizer


@pytest.fixture(scope="module")
def script_rows(tmp_path_factory) -> list[dict]:
    """What `scripts/vllm_completions.py --reference_for ... --dry_run` writes for this run."""
    spec = importlib.util.spec_from_file_location("vllm_completions", SCRIPT)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    out = tmp_path_factory.mktemp("script") / "prompts.jsonl"
    options = [f"{key[2:]}={value}" for key, value in zip(ARGS[::2], ARGS[1::2], strict=True)]
    script.main(["--reference_for", "default", "--train_options", *options, "--output", str(out),
                 "--dry_run"])  # fmt: skip
    return [json.loads(line) for line in out.read_text().splitlines()]


def _lines(sampled, script_rows, ids=True) -> list[dict]:
    """The script's rows with each prompt's samples added as its vLLM run adds them."""
    _, _, rows, samples, _ = sampled
    assert [(r["problem"], r["prompt"]) for r in script_rows] == [
        (row.problem, row.rendered_prompt) for row in rows
    ]
    lines = []
    for row, line in zip(rows, script_rows, strict=True):
        mine = samples[row.index * D * G : (row.index + 1) * D * G]
        line = {
            **line,
            "completions": [s.text for s in mine],
            "truncated": [s.truncated for s in mine],
            "completion_tokens": [len(s.completion_ids) for s in mine],
        }
        if ids:
            line["completion_ids"] = [s.completion_ids for s in mine]
        lines.append(line)
    return lines


def _write(path: Path, lines: list) -> Path:
    path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    return path


def _fingerprint(config, rows, tokenizer):
    return reference_fingerprint(config, load_model("bundled"), rows, tokenizer)


def test_importing_the_samplers_own_completions_gives_the_sampled_cache(
    sampled, script_rows, tmp_path
):
    directory, config, rows, samples, tokenizer = sampled
    assert len(samples) == len(rows) * D * G
    path = _write(tmp_path / "ref.jsonl", _lines(sampled, script_rows))
    imported = tmp_path / "imported"
    main(["reference", "--completions", str(path), *ARGS, "--reference_cache", str(imported)])

    fingerprint = _fingerprint(config, rows, tokenizer)
    a, b = ReferenceCache.open(directory, fingerprint), ReferenceCache.open(imported, fingerprint)
    assert a.source is None and b.source["kind"] == "external_completions"
    for key, value in a.tensors.items():
        torch.testing.assert_close(b.tensors[key], value, rtol=0, atol=0, equal_nan=True)
    cosine = a.tensors["per_function"][..., 2]
    assert len(set(cosine.flatten().tolist())) > 2  # lengths vary, so they were compared
    manifest = read_manifest(imported)
    assert not set(SAMPLED_ONLY) & set(manifest["fingerprint"])  # no weights are claimed
    assert manifest["source"]["sha256"] == "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
    assert manifest["source"]["completion_ids_given"] == len(samples)


def test_text_alone_is_re_encoded_with_an_eos_for_each_stopped_completion(
    sampled, script_rows, tmp_path
):
    _, config, rows, samples, tokenizer = sampled
    lines = _lines(sampled, script_rows, ids=False)
    for line, row in zip(lines, rows, strict=True):
        del line["truncated"]  # inferred: a re-encoded text shorter than the cap stopped
        # the prompt as `aapo eval`'s samples show it: its token ids decoded
        line["prompt"] = tokenizer.decode(row.prompt_ids, skip_special_tokens=False)
    tokens = Tokens(tokenizer, saved_eos_ids("bundled", tokenizer), config.max_completion_length)
    imported = read_reference_file(_write(tmp_path / "ref.jsonl", lines), rows, tokens, G)
    got = [s for row in imported.samples for s in row]
    exact = 0
    for mine, theirs in zip(got, samples, strict=True):
        assert mine.text == theirs.text
        assert mine.truncated or mine.completion_ids[-1] in tokens.eos_ids
        sampled_text = theirs.completion_ids[: len(theirs.completion_ids) - (not theirs.truncated)]
        if tokenizer.encode(theirs.text, add_special_tokens=False) == sampled_text:
            exact += 1  # where the text re-encodes to the sampled ids, all else agrees
            assert (mine.completion_ids, mine.truncated) == (
                theirs.completion_ids,
                theirs.truncated,
            )
    assert exact > len(samples) // 2
    assert any(s.truncated for s in got) and not all(s.truncated for s in got)


def test_the_trainer_reads_an_imported_cache_and_says_where_it_came_from(
    sampled, script_rows, tmp_path
):
    _, config, _, _, _ = sampled
    path = _write(tmp_path / "ref.jsonl", _lines(sampled, script_rows))
    imported = tmp_path / "imported"
    import_reference_completions(replace(config, reference_cache=str(imported)), path)
    run = replace(
        config, reference_cache=str(imported), max_steps=1, output_dir=str(tmp_path / "run")
    )
    from aapo.training.trainer import Trainer

    trainer = Trainer(run)
    assert trainer.reference_model is None
    assert isinstance(trainer.parts.reference, CachedReference)
    summary = trainer.train()
    assert str(path) in summary["reference_source"]
    assert "ref_reward" in summary["final_metrics"]
    assert "not sampled by aapo" in (tmp_path / "run" / "README.md").read_text()
    with pytest.raises(ReferenceCacheError, match=r"temperature: cache 1\.0, run 0\.5"):
        # the other fields still hold it to the run (a fresh folder: the first holds a run)
        Trainer(replace(run, temperature=0.5, output_dir=str(tmp_path / "run2")))


def test_a_directory_holding_another_file_or_setup_is_refused(sampled, script_rows, tmp_path):
    directory, config, *_ = sampled
    first = _write(tmp_path / "a.jsonl", _lines(sampled, script_rows))
    imported = replace(config, reference_cache=str(tmp_path / "imported"))
    import_reference_completions(imported, first)
    before = read_manifest(tmp_path / "imported")
    import_reference_completions(imported, first)  # the same file: nothing to do
    assert read_manifest(tmp_path / "imported") == before
    lines = _lines(sampled, script_rows)
    lines[0]["completions"][0] += " "
    with pytest.raises(DatasetError, match=r"not from .*b\.jsonl"):
        import_reference_completions(imported, _write(tmp_path / "b.jsonl", lines))
    with pytest.raises(ReferenceCacheError, match=re.escape("reference_weights: cache '<absent>'")):
        build_reference_cache(imported, process_index=0, num_processes=1)
    with pytest.raises(ReferenceCacheError, match=r"reference_weights: cache '[0-9a-f]"):
        import_reference_completions(replace(config, reference_cache=str(directory)), first)
    with pytest.raises(DatasetError, match=r"rows hold 2 draws .* reference_draws is 3"):
        import_reference_completions(replace(imported, reference_draws=3), first)


def _edit(lines, at, change):
    lines = [dict(line) for line in lines]
    change(lines, at)
    return lines


BAD = {
    "no problem": (lambda ls, i: ls[i].pop("problem"), "'problem' must be a string"),
    "problem not text": (lambda ls, i: ls[i].update(problem=7), "'problem' must be a string"),
    "unknown problem": (
        lambda ls, i: ls[i].update(problem="What is the airspeed of a swallow?"),
        "is not among the 16 training prompts",
    ),
    "no completions": (lambda ls, i: ls[i].pop("completions"), "needs exactly one of"),
    "completions not a list": (
        lambda ls, i: ls[i].update(completions="4"),
        "'completions' must be a non-empty list",
    ),
    "a completion not text": (
        lambda ls, i: ls[i]["completions"].__setitem__(1, 4),
        r"'completions'\[1\] must be a string",
    ),
    "odd count": (
        lambda ls, i: [
            ls[i][k].pop()
            for k in ("completions", "truncated", "completion_tokens", "completion_ids")
        ],
        r"3 completion\(s\); every row needs D draws × G=2",
    ),
    "another D": (
        lambda ls, i: [
            ls[i].update({k: ls[i][k][:2]})
            for k in ("completions", "truncated", "completion_tokens", "completion_ids")
        ],
        r"2 completion\(s\).*has 4",
    ),
    "truncated not bools": (
        lambda ls, i: ls[i].update(truncated=[0, 0, 0, 0]),
        "'truncated' must be a list of 4 bools",
    ),
    "ids out of the vocabulary": (
        lambda ls, i: ls[i]["completion_ids"].__setitem__(0, [10**9]),
        "'completion_ids' must be a list of 4 lists of ids",
    ),
    "longer than the cap": (
        lambda ls, i: ls[i]["completion_ids"].__setitem__(0, [5] * 25),
        "completion 0 has 25 tokens .*max_completion_length=24",
    ),
    "another prompt": (
        lambda ls, i: ls[i].update(prompt="Solve it."),
        "is not the training prompt of this problem",
    ),
    "another gold": (
        lambda ls, i: ls[i].update(answer="-123456"),
        "differs from the dataset's gold",
    ),
    "not an object": (lambda ls, i: ls.__setitem__(i, [1, 2]), "must be a JSON object"),
}


@pytest.mark.parametrize("name", BAD)
def test_a_bad_row_is_refused_naming_its_line(sampled, script_rows, tmp_path, name):
    _, config, rows, _, tokenizer = sampled
    change, message = BAD[name]
    path = _write(tmp_path / "bad.jsonl", _edit(_lines(sampled, script_rows), 5, change))
    tokens = Tokens(tokenizer, saved_eos_ids("bundled", tokenizer), config.max_completion_length)
    with pytest.raises(DatasetError, match=message) as err:
        read_reference_file(path, rows, tokens, G)
    assert "bad.jsonl:6:" in str(err.value)


def test_duplicate_and_missing_prompts_are_named_and_counted(sampled, script_rows, tmp_path):
    _, config, rows, _, tokenizer = sampled
    tokens = Tokens(tokenizer, saved_eos_ids("bundled", tokenizer), config.max_completion_length)
    lines = _lines(sampled, script_rows)
    with pytest.raises(DatasetError, match=r"dup.jsonl:17: a duplicate row.*dup.jsonl:4 already"):
        read_reference_file(_write(tmp_path / "dup.jsonl", [*lines, lines[3]]), rows, tokens, G)
    with pytest.raises(DatasetError, match="lacks 2 of the 16 training prompts") as err:
        read_reference_file(_write(tmp_path / "few.jsonl", lines[2:]), rows, tokens, G)
    assert rows[0].problem[:20] in str(err.value)
    with pytest.raises(DatasetError, match="has no rows"):
        read_reference_file(_write(tmp_path / "empty.jsonl", []), rows, tokens, G)


def test_the_script_takes_prompts_and_sampling_from_the_train_config_only(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("vllm_completions", SCRIPT)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    out = ["--output", str(tmp_path / "r.jsonl")]
    with pytest.raises(SystemExit):
        script.parse_args(["--reference_for", "default", "--temperature", "0.6", *out])
    assert "--temperature: with --reference_for the train config sets" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        script.parse_args(out)
    assert "--model is required (or --reference_for" in capsys.readouterr().err
