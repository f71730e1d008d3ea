"""`aapo eval --completions` against `aapo eval` itself: the bundled model's own samples, put
into the rows `scripts/vllm_completions.py --dry_run` writes, must get the same verdicts and
the same scores when graded as external completions, without any model being loaded the
second time. The script's vLLM run itself is not exercised (vLLM cannot be installed here)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"  # nothing may come from a hub

from aapo.assets import TINY_MODEL_DIR
from aapo.cli import main
from aapo.evaluation import harness

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "vllm_completions.py"
needs_model = pytest.mark.skipif(
    not (TINY_MODEL_DIR / "config.json").exists(), reason="the bundled model is not built"
)
QUICK = ["--max_new_tokens", "24", "--progress", "false"]


def _samples(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]


def vllm_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("vllm_completions", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def completions_file(prompt_rows: Path, samples: list[dict], path: Path) -> Path:
    """The script's dry-run rows with each problem's k completions added in sample order, as
    its vLLM run writes them (truncation and token counts included)."""
    by_id: dict[str, list[dict]] = {}
    for s in sorted(samples, key=lambda s: s["sample"]):
        by_id.setdefault(s["id"], []).append(s)
    rows = [json.loads(line) for line in prompt_rows.read_text().splitlines()]
    for row in rows:
        drawn = by_id[row["id"]]
        assert row["prompt"] == drawn[0]["prompt"]  # the script builds aapo eval's prompts
        assert (row["answer"], row["level"]) == (drawn[0]["gold"], drawn[0]["level"])
        row["completions"] = [s["completion"] for s in drawn]
        row["truncated"] = [s["truncated"] for s in drawn]
        row["completion_tokens"] = [s["completion_tokens"] for s in drawn]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@needs_model
@pytest.mark.slow
def test_external_grading_matches_aapo_eval_on_the_same_completions(
    capsys, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sampled = tmp_path / "sampled"
    args = ["--benchmarks", "synthetic", "--limit", "6", "--num_samples", "3", "--batch_size", "6"]
    main(["eval", "--output_dir", str(sampled), "--temperature", "1.0", *QUICK, *args])
    reference = json.loads((sampled / "results.json").read_text())
    prompts = tmp_path / "prompts.jsonl"
    script_args = ["--model", "bundled", "--output", str(prompts), "--dry_run", *args[:4]]
    vllm_script().main([*script_args, "--num_samples", "3"])
    path = completions_file(prompts, _samples(sampled), tmp_path / "engine.jsonl")

    def refuse(*a, **k):
        raise AssertionError("a model was touched while grading a completions file")

    for name in ("resolve_model_path", "load_model", "load_tokenizer", "make_sampler"):
        monkeypatch.setattr(harness, name, refuse)
    graded = tmp_path / "graded"
    main(["eval", "--completions", str(path), "--output_dir", str(graded), "--progress", "false"])
    results = json.loads((graded / "results.json").read_text())
    assert "| engine | " in capsys.readouterr().out

    def verdicts(out: Path) -> dict:
        return {(s["benchmark"], s["id"], s["sample"]): s for s in _samples(out)}

    before, after = verdicts(sampled), verdicts(graded)
    assert len(before) == 18 and before.keys() == after.keys()
    fields = ("completion", "prompt", "gold", "extracted", "correct", "status", "level")
    for key in before:
        assert {f: after[key][f] for f in fields} == {f: before[key][f] for f in fields}, key
    # exactly the same numbers: pass@1, interval, levels, statuses, lengths (not the source)
    entry, expected = results["benchmarks"]["synthetic"], reference["benchmarks"]["synthetic"]
    assert {k: v for k, v in entry.items() if k != "source"} == {
        k: v for k, v in expected.items() if k != "source"
    }
    assert results["num_samples"] == 3 and results["samples"] == {"graded": 18, "reused": 0}
    # a test that cannot fail is no test: the samples must hold both verdicts
    assert 0 < sum(s["correct"] for s in before.values()) < 18


def test_a_bad_row_stops_the_command_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "engine.jsonl"
    good = {"problem": "1+1?", "answer": "2", "completions": ["\\boxed{2}"]}
    path.write_text(json.dumps(good) + "\n" + json.dumps({**good, "completions": []}) + "\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "aapo", "eval", "--completions", str(path),
         "--output_dir", str(tmp_path / "out")],
        capture_output=True, text=True, env=env, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert f"{path}:2: 'completions' must be a non-empty list of strings" in done.stderr
    assert not (tmp_path / "out" / "results.json").exists()


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed")
def test_the_vllm_script_without_vllm_says_how_to_get_it(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    out = tmp_path / "c.jsonl"
    command = [sys.executable, str(SCRIPT), "--model", "bundled", "--output", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 1 and "needs vLLM for sampling: pip install vllm" in done.stderr
    assert not out.exists()
    wrong = subprocess.run(
        [*command[:-1], str(tmp_path / "c.csv")], capture_output=True, text=True, env=env,
        timeout=120,
    )  # fmt: skip
    assert wrong.returncode == 2 and "--output must end in .jsonl" in wrong.stderr
