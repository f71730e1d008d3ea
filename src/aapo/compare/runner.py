"""The variants × seeds job matrix of `aapo compare`, each job an ordinary `aapo train` run.

Job (variant v, seed s) trains into `OUT/<v>/seed-<s>/` as a subprocess

    python -m aapo train --config CONFIG --algorithm A --seed s --output_dir OUT/v/seed-s
        [the variant's overrides] [the user's train options] [--resume]

so a run directory of a comparison is exactly what `aapo train` writes, plus `train.log` (the
subprocess's output, appended per attempt) and `summary.json` (its last JSON line, with the
variant). Several jobs run at once with the cores split between them. Rerunning is safe: a job
whose `model.safetensors` and `summary.json` exist is kept; a killed one resumes from its latest
complete checkpoint (set `save_steps`), else restarts, replacing what its killed attempt wrote
(`--overwrite_output_dir true`: `aapo train` refuses a fresh run into a run's folder
otherwise). A kept or resumed run must have been trained with the config now planned, or the
comparison stops, naming the key that differs.

Every job's config is built and validated in this process before any job starts.

Left out: GPU placement (jobs share whatever devices the subprocess sees) and sharing a
reference-reward cache (pass its option through as a train option).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from aapo.compare.runs import ATTEMPT_KEYS, SUMMARY_FILE, field_defaults
from aapo.compare.variants import RUNNER_KEYS, CompareError, Variant, parse_variants
from aapo.config import config_to_dict, load_config, parse_overrides, read_yaml
from aapo.messages import shown
from aapo.training.checkpoint import list_checkpoints
from aapo.training.run_dir import run_entries

log = logging.getLogger("aapo.compare")
TRAIN = ("-m", "aapo", "train")
LOG_FILE = "train.log"


@dataclass(frozen=True)
class Job:
    variant: Variant
    seed: int
    run_dir: Path
    planned: dict[str, Any]  # the run's validated config, as its config.yaml will hold it

    @property
    def name(self) -> str:
        return f"{self.variant.name} seed {self.seed}"


@dataclass(frozen=True)
class Plan:
    """What `aapo compare` will run: the shared config and options, and one job per cell."""

    config: str
    options: list[str]
    variants: list[Variant]
    seeds: list[int]
    jobs: list[Job]


@dataclass(frozen=True)
class JobResult:
    job: Job
    status: str  # kept, trained, resumed or failed
    seconds: float
    message: str = ""


def parse_seeds(text: str) -> list[int]:
    """`3` → [1, 2, 3]; `1,5,9` → [1, 5, 9]."""
    try:
        values = [int(part) for part in text.split(",")]
    except ValueError as err:
        raise CompareError(
            f"--seeds {shown(text)}: give a count N or a comma-separated list"
        ) from err
    if "," not in text:
        if values[0] < 1:
            raise CompareError(f"--seeds {shown(text)}: the number of seeds must be >= 1")
        return list(range(1, values[0] + 1))
    if len(set(values)) != len(values):
        raise CompareError(f"--seeds {shown(text)} repeats a seed")
    return values


def plan_comparison(
    algorithms: str, seeds: str, config: str, options: Sequence[str], output_dir: Path
) -> Plan:
    """Validate everything and lay out the jobs; nothing is trained or written."""
    from aapo.training.builders import prepare_config
    from aapo.training.config import TrainConfig

    options = list(options)
    given = parse_overrides(options)
    runner_set = sorted(set(given) & set(RUNNER_KEYS))
    if runner_set:
        key = runner_set[0]
        raise CompareError(f"train option --{key} is set by compare for each run; {_hint(key)}")
    config = str(Path(config).resolve()) if Path(config).is_file() else config
    # the shared options are checked once, and plug-ins imported, before variants are looked up
    prepare_config(load_config(TrainConfig, config, options))
    variants, seed_list = parse_variants(algorithms), parse_seeds(seeds)
    _check_variants_differ(variants, set(given), set(read_yaml(config)), config)
    jobs = []  # seed by seed: a comparison cut short leaves whole pairs, not whole variants
    for seed in seed_list:
        for variant in variants:
            run_dir = output_dir / variant.name / f"seed-{seed}"
            args = _run_args(variant, seed, run_dir)
            try:
                built = prepare_config(load_config(TrainConfig, config, [*args, *options]))
            except ValueError as err:
                raise CompareError(f"variant {variant.name!r}: {err}") from err
            jobs.append(Job(variant, seed, run_dir, _as_yaml(config_to_dict(built))))
    return Plan(config, options, variants, seed_list, jobs)


def _check_variants_differ(
    variants: Sequence[Variant], options: set[str], yaml_keys: set[str], config: str
) -> None:
    """A key a variant varies must be left to the variants: set in the shared config or the
    options, it would change the other variants too (aapo would become aapo_noclip)."""
    for variant in variants:
        for key in sorted(variant.overrides):
            if key in options:
                raise CompareError(
                    f"train option --{key} clashes with variant {variant.name!r}, which sets it"
                )
            if key in yaml_keys:
                raise CompareError(
                    f"config {config} sets {key!r}, which variant {variant.name!r} varies; "
                    "remove it so the variants differ in it"
                )


def _hint(key: str) -> str:
    return {
        "algorithm": "use --algorithms",
        "seed": "use --seeds",
        "output_dir": "use compare's --output_dir",
        "resume_from_checkpoint": "compare resumes killed runs by itself",
        "overwrite_output_dir": "compare restarts unfinished runs by itself",
    }[key]


def _run_args(variant: Variant, seed: int, run_dir: Path) -> list[str]:
    """The per-job options; values as JSON, which the config loader reads as YAML."""
    args = ["--algorithm", variant.algorithm, "--seed", str(seed), "--output_dir", str(run_dir)]
    for key, value in variant.overrides.items():
        args += [f"--{key}", json.dumps(value)]
    return args


def _as_yaml(values: dict[str, Any]) -> dict[str, Any]:
    """The dict as it reads back from config.yaml (tuples become lists, and so on)."""
    return yaml.safe_load(yaml.safe_dump(values, sort_keys=False))


def job_state(job: Job) -> str:
    """`done` (keep it), `resume` (a complete checkpoint exists) or `fresh`."""
    run_dir = job.run_dir
    if (run_dir / "model.safetensors").is_file() and (run_dir / SUMMARY_FILE).is_file():
        _check_same_config(job)
        return "done"
    if run_dir.is_dir() and list_checkpoints(run_dir):
        _check_same_config(job)
        return "resume"
    return "fresh"


def _check_same_config(job: Job) -> None:
    path = job.run_dir / "config.yaml"
    if not path.is_file():
        raise CompareError(f"{job.run_dir} has a model or checkpoint but no config.yaml")
    found = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    # a moved comparison is still itself; how an attempt started is not the run's config
    ignore = ATTEMPT_KEYS
    keys = (set(found) | set(job.planned)) - ignore
    # a field added to aapo since the run, at its default, is what the run trained with
    added = {k for k in set(job.planned) - set(found) if job.planned[k] == field_defaults().get(k)}
    differ = sorted(k for k in keys - added if found.get(k) != job.planned.get(k))
    if differ:
        key = differ[0]
        raise CompareError(
            f"{path} was trained with {key}={shown(found.get(key))}, this comparison asks for "
            f"{key}={shown(job.planned.get(key))} (differing keys: {', '.join(differ)}); use "
            "another --output_dir or delete that run"
        )


def train_command(
    plan: Plan, job: Job, resume: bool, python: str = sys.executable, overwrite: bool = False
) -> list[str]:
    """The job's `aapo train` command; `overwrite` replaces what a killed attempt left."""
    command = [python, *TRAIN, "--config", plan.config]
    command += _run_args(job.variant, job.seed, job.run_dir) + plan.options
    if overwrite:
        command += ["--overwrite_output_dir", "true"]
    return command + (["--resume"] if resume else [])


def threads_per_job(jobs_at_once: int, cores: int | None = None) -> int:
    """The cores split evenly between concurrent jobs, at least one each; an OMP_NUM_THREADS
    already set in the environment caps it (so `OMP_NUM_THREADS=1 aapo compare` stays at 1)."""
    if cores is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    threads = max(1, (cores or 1) // jobs_at_once)
    cap = os.environ.get("OMP_NUM_THREADS", "")
    return min(threads, int(cap)) if cap.isdigit() and int(cap) > 0 else threads


_RUNNING: set[subprocess.Popen] = set()  # the training runs in progress, for forward_interrupt
_RUNNING_LOCK = threading.Lock()


def forward_interrupt() -> int:
    """Send SIGINT to every training run in progress, as a Ctrl-C at a terminal does (each
    saves a checkpoint and exits); for a comparison stopped by SIGTERM, which reaches this
    process alone, so that its runs neither train on unseen nor die writing to a closed
    pipe. How many runs it reached."""
    with _RUNNING_LOCK:
        children = [child for child in _RUNNING if child.poll() is None]
    for child in children:
        child.send_signal(signal.SIGINT)
    return len(children)


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """While running a comparison, a SIGTERM (a scheduler's or `kill`'s stop) stops it as a
    Ctrl-C would: the runs in progress are told (forward_interrupt), none is started after.
    Outside the main thread (where Python allows no handler) it changes nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame: object) -> None:
        log.warning("SIGTERM: stopping %d run(s) in progress at a checkpoint", forward_interrupt())
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_jobs(plan: Plan, jobs_at_once: int = 1, python: str = sys.executable) -> list[JobResult]:
    """Run every job not yet done, `jobs_at_once` at a time; results in plan order. A failed
    job does not stop the others; Ctrl-C stops starting new ones (running ones checkpoint)."""
    if jobs_at_once < 1:
        raise CompareError(f"--jobs must be >= 1, got {jobs_at_once}")
    states = {job.run_dir: job_state(job) for job in plan.jobs}  # config clashes fail first
    pending = sum(state != "done" for state in states.values())
    env = dict(os.environ)
    threads = str(threads_per_job(max(1, min(jobs_at_once, pending))))
    env.update(OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads, TOKENIZERS_PARALLELISM="false")
    stop = threading.Event()

    def work(job: Job) -> JobResult:
        if states[job.run_dir] == "done":
            log.info("%s: kept (finished earlier)", job.name)
            return JobResult(job, "kept", 0.0)
        if stop.is_set():
            return JobResult(job, "failed", 0.0, "not started (interrupted)")
        return _run_one(plan, job, states[job.run_dir] == "resume", env, python)

    with ThreadPoolExecutor(max_workers=jobs_at_once) as pool:
        futures = [pool.submit(work, job) for job in plan.jobs]
        try:
            return [future.result() for future in futures]
        except KeyboardInterrupt:
            stop.set()
            raise


def _run_one(plan: Plan, job: Job, resume: bool, env: dict[str, str], python: str) -> JobResult:
    job.run_dir.mkdir(parents=True, exist_ok=True)
    (job.run_dir / SUMMARY_FILE).unlink(missing_ok=True)
    restart = not resume and bool(run_entries(job.run_dir))  # a killed attempt's files
    command = train_command(plan, job, resume, python, overwrite=restart)
    log.info("%s: %s", job.name, "resuming" if resume else "training")
    started = time.perf_counter()
    with (job.run_dir / LOG_FILE).open("a", encoding="utf-8") as log_file:
        log_file.write(f"=== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(command)}\n")
        log_file.flush()
        child = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=log_file, env=env, text=True
        )
        with _RUNNING_LOCK:
            _RUNNING.add(child)
        try:
            stdout, _ = child.communicate()
        finally:
            with _RUNNING_LOCK:
                _RUNNING.discard(child)
        done = subprocess.CompletedProcess(command, child.returncode, stdout)
        log_file.write(done.stdout)
    seconds = time.perf_counter() - started
    summary = _last_json_object(done.stdout)
    if done.returncode != 0 or summary is None:
        why = f"exit code {done.returncode}" if done.returncode else "no JSON summary on stdout"
        message = f"{why}; see {job.run_dir / LOG_FILE}"
        log.error("%s: failed (%s)", job.name, message)
        return JobResult(job, "failed", seconds, message)
    _write_summary(job, summary, command)
    log.info("%s: done in %.0f s", job.name, seconds)
    return JobResult(job, "resumed" if resume else "trained", seconds)


def _last_json_object(stdout: str) -> dict[str, Any] | None:
    for line in reversed(stdout.splitlines()):
        try:
            value = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict):
            return value
    return None


def _write_summary(job: Job, summary: dict[str, Any], command: list[str]) -> None:
    record = {
        "variant": job.variant.name,
        "algorithm": job.variant.algorithm,
        "seed": job.seed,
        "overrides": dict(job.variant.overrides),
        "command": command,
        **summary,
    }
    tmp = job.run_dir / f"{SUMMARY_FILE}.tmp"
    tmp.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    tmp.replace(job.run_dir / SUMMARY_FILE)
