"""The job matrix: planning, kept / resumed / restarted runs, parallel jobs, failures.

A fake `aapo train` stands in for the trainer: it writes what a finished run leaves (the planned
config as config.yaml, metrics.jsonl, model.safetensors), prints the summary line, and logs
each call, so the runner's decisions can be counted. It imports no torch, so it starts fast.
"""

import json
import os
import signal
import stat
import sys
import threading
import time

import pytest
import yaml

from aapo.compare.runner import (
    forward_interrupt,
    job_state,
    parse_seeds,
    plan_comparison,
    run_jobs,
    sigterm_as_interrupt,
    threads_per_job,
    train_command,
)
from aapo.config import ConfigError

FAKE = f"""#!{sys.executable}
import json, os, sys
from pathlib import Path
import yaml

assert sys.argv[1:4] == ["-m", "aapo", "train"] and sys.argv[4] == "--config"
args = sys.argv[6:]
resume = args[-1:] == ["--resume"]
overwrite = "--overwrite_output_dir" in args
out = Path(args[args.index("--output_dir") + 1])
planned = json.loads(os.environ["FAKE_CONFIGS"])[str(out)]
with open(os.environ["FAKE_CALLS"], "a") as calls:
    calls.write(json.dumps(dict(run=out.name, variant=out.parent.name, resume=resume,
                                overwrite=overwrite,
                                threads=os.environ["OMP_NUM_THREADS"])) + "\\n")
if os.environ.get("FAKE_FAIL") == f"{{out.parent.name}}/{{out.name}}":
    print("boom", file=sys.stderr)
    sys.exit(3)
(out / "config.yaml").write_text(yaml.safe_dump(planned, sort_keys=False))
(out / "metrics.jsonl").write_text(json.dumps(dict(step=1, reward=0.1, loss=0.0)) + "\\n")
(out / "model.safetensors").write_bytes(b"weights")
print("held-out accuracy (greedy): 0.500 -> 0.600")
print(json.dumps(dict(held_out_accuracy_before=0.5, held_out_accuracy_after=0.6, steps=1)))
"""
OPTIONS = ["--max_steps", "2", "--report_to", "[]"]


@pytest.fixture
def fake(tmp_path, monkeypatch):
    script = tmp_path / "fake_train"
    script.write_text(FAKE, encoding="utf-8")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("FAKE_CALLS", str(tmp_path / "calls.jsonl"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    return script


def _use(plan, monkeypatch):
    """Tell the fake trainer each run's planned config, as the real one would build it."""
    configs = {str(job.run_dir): job.planned for job in plan.jobs}
    monkeypatch.setenv("FAKE_CONFIGS", json.dumps(configs))
    return plan


def _calls(tmp_path):
    path = tmp_path / "calls.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_seeds_are_a_count_or_a_list():
    assert parse_seeds("3") == [1, 2, 3]
    assert parse_seeds("1,5,9") == [1, 5, 9]
    for bad, match in (("0", ">= 1"), ("1,1", "repeats"), ("two", "count N or")):
        with pytest.raises(ConfigError, match=match):
            parse_seeds(bad)


def test_threads_split_the_cores_and_respect_a_set_limit(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert threads_per_job(1, cores=16) == 16
    assert threads_per_job(3, cores=16) == 5
    assert threads_per_job(4, cores=2) == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert threads_per_job(2, cores=16) == 2


def test_plan_lays_out_variant_seed_directories_and_commands(tmp_path):
    plan = plan_comparison("aapo_noclip,grpo", "2", "default", OPTIONS, tmp_path)
    # seed by seed, so a comparison cut short leaves whole pairs
    assert [(j.variant.name, j.seed) for j in plan.jobs] == [
        ("aapo_noclip", 1),
        ("grpo", 1),
        ("aapo_noclip", 2),
        ("grpo", 2),
    ]
    job = plan.jobs[2]
    assert job.run_dir == tmp_path / "aapo_noclip" / "seed-2"
    assert job.planned["momentum_clip"] is False and job.planned["max_steps"] == 2
    command = train_command(plan, job, resume=True, python="py")
    assert command[:6] == ["py", "-m", "aapo", "train", "--config", "default"]
    assert command[6:14] == [
        "--algorithm",
        "aapo",
        "--seed",
        "2",
        "--output_dir",
        str(job.run_dir),
        "--momentum_clip",
        "false",
    ]
    assert command[14:] == [*OPTIONS, "--resume"]
    # dapo's preset fills epsilon_high, as the trainer's config.yaml will show it
    dapo = plan_comparison("dapo", "1", "default", OPTIONS, tmp_path).jobs[0]
    assert dapo.planned["epsilon_high"] == 0.28


def test_bad_plans_name_the_culprit(tmp_path):
    cases = [
        (["--seed", "4"], "aapo", "--seed is set by compare .* use --seeds"),
        (["--output_dir", "x"], "aapo", "--output_dir is set by compare"),
        (["--overwrite_output_dir", "true"], "aapo", "--overwrite_output_dir is set by compare"),
        (["--momentum_clip", "true"], "aapo,aapo_noclip", "clashes with variant 'aapo_noclip'"),
        (["--learnin_rate", "1e-3"], "aapo", "unknown config key 'learnin_rate'.*learning_rate"),
        (["--num_generations", "1"], "aapo", "num_generations must be >= 2"),
        ([], "aapo,rloo", "unknown algorithm or variant 'rloo'"),
    ]
    for options, algorithms, match in cases:
        with pytest.raises(ConfigError, match=match):
            plan_comparison(algorithms, "1", "default", options, tmp_path)
    shared = tmp_path / "run.yaml"
    shared.write_text("momentum_clip: false\nmax_steps: 3\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="sets 'momentum_clip', which variant 'aapo_noclip'"):
        plan_comparison("aapo,aapo_noclip", "1", str(shared), [], tmp_path)
    assert plan_comparison("aapo", "1", str(shared), [], tmp_path).jobs[0].planned["max_steps"] == 3


def test_finished_runs_are_kept_and_killed_runs_resume_or_restart(tmp_path, fake, monkeypatch):
    out = tmp_path / "cmp"
    plan = _use(plan_comparison("aapo,gpg", "2", "default", OPTIONS, out), monkeypatch)
    first = run_jobs(plan, jobs_at_once=2, python=str(fake))
    assert [r.status for r in first] == ["trained"] * 4
    assert len(_calls(tmp_path)) == 4 and {c["threads"] for c in _calls(tmp_path)} == {"1"}
    summary = json.loads((out / "gpg" / "seed-2" / "summary.json").read_text())
    assert (summary["variant"], summary["seed"], summary["held_out_accuracy_after"]) == (
        "gpg",
        2,
        0.6,
    )
    assert "held-out accuracy (greedy)" in (out / "gpg" / "seed-2" / "train.log").read_text()

    again = run_jobs(plan, jobs_at_once=1, python=str(fake))
    assert [r.status for r in again] == ["kept"] * 4
    assert len(_calls(tmp_path)) == 4  # nothing retrained

    # aapo seed 1 was killed after checkpoint-1; gpg seed 1 before any checkpoint
    killed = out / "aapo" / "seed-1"
    (killed / "summary.json").unlink()
    (killed / "checkpoint-1").mkdir()
    (killed / "checkpoint-1" / "trainer_state.json").write_text('{"step": 1}')
    (out / "gpg" / "seed-1" / "summary.json").unlink()
    third = run_jobs(plan, jobs_at_once=1, python=str(fake))
    assert [r.status for r in third] == ["resumed", "trained", "kept", "kept"]  # seed-major
    assert not any(c["overwrite"] for c in _calls(tmp_path)[:4])  # fresh folders
    # the restarted run replaces its killed attempt's files: aapo train refuses it otherwise
    assert [
        (c["variant"], c["run"], c["resume"], c["overwrite"]) for c in _calls(tmp_path)[4:]
    ] == [
        ("aapo", "seed-1", True, False),
        ("gpg", "seed-1", False, True),
    ]


def test_a_failed_run_is_reported_and_the_others_finish(tmp_path, fake, monkeypatch):
    monkeypatch.setenv("FAKE_FAIL", "grpo/seed-1")
    plan = _use(plan_comparison("grpo", "2", "default", OPTIONS, tmp_path / "cmp"), monkeypatch)
    results = run_jobs(plan, jobs_at_once=2, python=str(fake))
    assert [r.status for r in results] == ["failed", "trained"]
    log = tmp_path / "cmp" / "grpo" / "seed-1" / "train.log"
    assert results[0].message == f"exit code 3; see {log}"
    assert "boom" in log.read_text()
    assert not (log.parent / "summary.json").exists()
    with pytest.raises(ConfigError, match="--jobs must be >= 1"):
        run_jobs(plan, jobs_at_once=0, python=str(fake))


def test_a_kept_run_with_another_config_stops_the_comparison(tmp_path, fake, monkeypatch):
    out = tmp_path / "cmp"
    first = _use(plan_comparison("gpg", "1", "default", OPTIONS, out), monkeypatch)
    run_jobs(first, python=str(fake))
    changed = plan_comparison("gpg", "1", "default", [*OPTIONS, "--learning_rate", "1e-3"], out)
    lr = first.jobs[0].planned["learning_rate"]
    with pytest.raises(ConfigError, match=rf"learning_rate={lr!r}.*learning_rate=0.001"):
        run_jobs(changed, python=str(fake))
    assert len(_calls(tmp_path)) == 1
    assert os.environ["OMP_NUM_THREADS"] == "1"


def test_a_run_from_before_a_field_existed_is_kept_when_the_field_is_at_its_default(
    tmp_path, fake, monkeypatch
):
    """A comparison started on an older aapo goes on: a key its config.yaml lacks counts as
    the default it trained with, and only as that."""
    out = tmp_path / "cmp"
    plan = _use(plan_comparison("gpg", "1", "default", OPTIONS, out), monkeypatch)
    run_jobs(plan, python=str(fake))
    path = out / "gpg" / "seed-1" / "config.yaml"
    older = yaml.safe_load(path.read_text())
    del older["synthetic_levels"], older["prompt_examples"]
    path.write_text(yaml.safe_dump(older))
    assert job_state(plan.jobs[0]) == "done"
    asks = plan_comparison("gpg", "1", "default", [*OPTIONS, "--synthetic_levels", "[1, 2]"], out)
    with pytest.raises(ConfigError, match=r"synthetic_levels=None.*synthetic_levels=\[1, 2\]"):
        job_state(asks.jobs[0])


WAITS_FOR_SIGINT = f"""#!{sys.executable}
import os, signal, sys, time
from pathlib import Path

out = Path(sys.argv[sys.argv.index("--output_dir") + 1])
def stop(signum, frame):
    (out / "interrupted").write_text("checkpoint saved")
    sys.exit(130)
signal.signal(signal.SIGINT, stop)
(out / "started").write_text("")
time.sleep(60)
"""


def test_a_sigterm_stops_the_runs_in_progress_at_a_checkpoint(tmp_path, monkeypatch):
    """SIGTERM reaches the comparison alone (a Ctrl-C reaches the whole process group): it
    passes it on as SIGINT, so the runs save and exit instead of training on unwatched."""
    script = tmp_path / "waits"
    script.write_text(WAITS_FOR_SIGINT, encoding="utf-8")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    plan = plan_comparison("aapo,gpg", "1", "default", OPTIONS, tmp_path / "cmp")
    results = []
    worker = threading.Thread(
        target=lambda: results.extend(run_jobs(plan, jobs_at_once=2, python=str(script)))
    )
    worker.start()
    started = [job.run_dir / "started" for job in plan.jobs]
    deadline = time.monotonic() + 30
    while not all(p.exists() for p in started) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert forward_interrupt() == 2
    worker.join(timeout=30)
    assert not worker.is_alive()
    assert [r.status for r in results] == ["failed", "failed"]
    assert all((job.run_dir / "interrupted").exists() for job in plan.jobs)
    assert forward_interrupt() == 0  # none left running


def test_sigterm_becomes_an_interrupt_only_while_comparing():
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt), sigterm_as_interrupt():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler runs at the next bytecode
    assert signal.getsignal(signal.SIGTERM) is before
