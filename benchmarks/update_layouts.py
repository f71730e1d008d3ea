"""Seconds per optimizer step of the update alone, by micro-batch layout, on one sampled batch.

One generation batch is sampled once (GroupSampler, the synthetic train split, T = 1); then
the same optimizer step (GRPO's loss, one step per batch) is timed on it in three layouts,
interleaved for `--reps` repetitions after a warm-up each, medians reported:
  plain            group-major rows cut in order, a prompt copy per row, one forward pass
                   per micro-batch (the layout before length bucketing);
  bucketed         rows ordered by `update.bucket_order`, a prompt copy per row;
  bucketed_shared  the same order, each distinct prompt computed once (the trainer's default).
Also printed: the tokens each layout computes (prompt and completion columns, padding
included) beside the real tokens.

    OMP_NUM_THREADS=1 python benchmarks/update_layouts.py [--model bundled|smollm2-135m]
        [--prompts 8] [--per-device 16] [--reps 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from dataclasses import replace
from typing import Any

import torch

from aapo.algorithms import get_algorithm, get_policy_loss
from aapo.rollout import SamplingParams
from aapo.training.config import TrainConfig
from aapo.training.logprobs import Packed
from aapo.training.trainer import Trainer
from aapo.training.update import LossSettings, MicroBatch, micro_batches, optimizer_step

G, NEW_TOKENS = 8, 64


def plain_micro_batches(prompts: list[list[int]], samples: list, advantages, size: int, pad: int):
    """Contiguous group-major chunks with one prompt copy per row."""
    out = []
    for start in range(0, len(samples), size):
        rows = range(start, min(start + size, len(samples)))
        batch = Packed.build(
            [prompts[n // G] for n in rows],
            list(range(len(rows))),
            [samples[n].completion_ids for n in rows],
            pad,
        )
        out.append(MicroBatch(batch, batch.completion_mask.clone(), advantages[list(rows)]))
    return out


def computed_tokens(batches: list[MicroBatch], shared: bool) -> int:
    total = 0
    for mb in batches:
        prompts = mb.batch.prompt_ids if shared else mb.batch.unshared().prompt_ids
        total += prompts.numel() + mb.batch.completion_ids.numel()
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="bundled")
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--per-device", type=int, default=16)
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    torch.manual_seed(0)
    n = args.prompts * G
    with tempfile.TemporaryDirectory() as tmp:
        config = TrainConfig(
            model_name_or_path=args.model,
            algorithm="grpo",
            num_generations=G,
            per_device_train_batch_size=args.per_device,
            gradient_accumulation_steps=n // args.per_device,
            max_completion_length=NEW_TOKENS,
            learning_rate=1e-5,
            dataset_size=200,
            report_to=[],
            output_dir=tmp,
        )
        trainer = Trainer(config)
        parts = trainer.parts
        prompts = [row.prompt_ids for row in trainer.rows[: args.prompts]]
        params = SamplingParams(G, 1.0, 1.0, NEW_TOKENS)
        groups = parts.policy_sampler.generate(prompts, params)
        samples = [s for group in groups for s in group]
        advantages = torch.randn(n)
        layouts = {
            "plain": (
                plain_micro_batches(prompts, samples, advantages, args.per_device, parts.pad_id),
                False,
            ),
        }
        for name, shared in (("bucketed", False), ("bucketed_shared", True)):
            batches = micro_batches(
                prompts,
                samples,
                advantages,
                size=args.per_device,
                per_step=n // args.per_device,
                pad_id=parts.pad_id,
                mask_truncated=False,
                device=parts.accelerator.device,
                shared=shared,
            )
            layouts[name] = (batches, shared)
        times = _time_layouts(parts, layouts, args.reps)
    real = sum(len(p) * G for p in prompts) + sum(len(s.completion_ids) for s in samples)
    result: dict[str, Any] = {"model": args.model, "prompts": args.prompts, "group": G}
    result.update(per_device=args.per_device, reps=args.reps, real_tokens=real)
    for name, (batches, shared) in layouts.items():
        seconds = statistics.median(times[name])
        tokens = computed_tokens(batches, shared)
        result[name] = {"seconds": round(seconds, 3), "computed_tokens": tokens}
        print(f"{name:16s} {seconds:.3f} s/update, {tokens} tokens computed ({real} real)")
    print(json.dumps(result))


def _time_layouts(parts: Any, layouts: dict, reps: int) -> dict[str, list[float]]:
    grpo = get_algorithm("grpo")
    settings = LossSettings(
        loss_fn=get_policy_loss(grpo.policy_loss),
        aggregation=grpo.aggregation,
        temperature=1.0,
        epsilon_low=0.2,
        epsilon_high=None,
        beta=0.0,
        max_completion_length=NEW_TOKENS,
        max_grad_norm=1.0,
    )
    times: dict[str, list[float]] = {name: [] for name in layouts}
    for rep in range(reps + 1):  # repetition 0 warms each layout up
        for name, (batches, shared) in layouts.items():
            started = time.perf_counter()
            optimizer_step(
                batches,
                replace(settings, share_prompts=shared),
                model=parts.model,
                optimizer=parts.optimizer,
                scheduler=parts.scheduler,
                accelerator=parts.accelerator,
            )
            if rep:
                times[name].append(time.perf_counter() - started)
    return times


if __name__ == "__main__":
    main()
