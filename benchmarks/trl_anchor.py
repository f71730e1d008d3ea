"""Sanity anchor: does TRL's GRPOTrainer also learn on the default run's setup?

    pip install trl==1.16.0        (benchmark-only; aapo never imports it)
    OMP_NUM_THREADS=1 python benchmarks/trl_anchor.py [--seed 1] [--steps 100]

Trains the bundled model with TRL's GRPOTrainer on the default recipe's task and settings, and
measures held-out greedy accuracy before and after with aapo's own check (`held_out_metrics`:
the same test-side problems, grader and token cap as `aapo train`'s summary). What both get,
read from the default recipe: the synthetic train split (the recipe's size and seed) rendered
by aapo's prompt template; G completions per prompt, the recipe's prompts per optimizer step
(TRL: micro-batch × accumulation), new-token cap, temperature, learning rate and schedule,
gradient clip, rewards format + accuracy with the recipe's weights; GRPO's loss (TRL's
`loss_type="grpo"`, group-std scaled advantages, ε = 0.2), β = 0, float32 on CPU, no gradient
checkpointing, no vLLM. It is a GRPO anchor (TRL has no AAPO): compare its gain with
`aapo train --algorithm grpo --seed S`, which the script runs beside it unless --trl-only.

Without trl installed it says so and exits 0. Left out: timing (trl_side_by_side.py does it).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import tempfile
from dataclasses import replace
from pathlib import Path


def held_out(model, tokenizer, config) -> float:
    """aapo's held-out greedy accuracy, exactly as `aapo train` computes it for `config`."""
    from aapo.data.datasets import load_problems
    from aapo.data.rows import prepare_rows
    from aapo.rollout import HFSampler
    from aapo.training.evaluate import held_out_metrics

    rows = load_problems("synthetic", "test", config.seed)[: config.eval_num_problems]
    render = (config.system_prompt, config.prompt_template, config.max_prompt_length)
    rows, _ = prepare_rows(rows, tokenizer, *render)
    sampler = HFSampler(model, tokenizer)
    cap = config.eval_max_new_tokens or config.max_completion_length
    return held_out_metrics(sampler, rows, cap)["eval/accuracy"]


def trl_config(config, output_dir: str, steps: int):
    from trl import GRPOConfig

    return GRPOConfig(
        output_dir=output_dir,
        use_cpu=True,
        bf16=False,  # TRL's default is bf16
        gradient_checkpointing=False,  # TRL's default is on; the recipe's is off
        per_device_train_batch_size=config.per_device_train_batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        num_generations=config.num_generations,
        max_completion_length=config.max_completion_length,
        temperature=config.temperature,
        top_p=1.0,
        top_k=0,
        beta=0.0,
        loss_type="grpo",
        scale_rewards="group",
        epsilon=0.2,
        reward_weights=list(config.reward_weights),
        learning_rate=config.learning_rate,
        lr_scheduler_type=config.lr_scheduler_type,
        weight_decay=0.0,
        max_grad_norm=config.max_grad_norm,
        max_steps=steps,
        use_vllm=False,
        logging_steps=max(1, steps // 10),
        save_strategy="no",
        eval_strategy="no",
        report_to="none",
        seed=config.seed,
        data_seed=config.seed,
    )


def train_trl(config, steps: int) -> dict:
    import torch
    from datasets import Dataset
    from trl import GRPOTrainer

    from aapo.data.datasets import load_problems
    from aapo.data.rows import prepare_rows
    from aapo.models import load_model, load_tokenizer, resolve_model_path
    from aapo.rewards import get_reward_function

    torch.manual_seed(config.seed)
    path = resolve_model_path(config.model_name_or_path)
    tokenizer, model = load_tokenizer(path), load_model(path, torch.float32)
    problems = load_problems("synthetic", "train", config.seed, config.dataset_size)
    render = (config.system_prompt, config.prompt_template, config.max_prompt_length)
    rows, _ = prepare_rows(problems, tokenizer, *render)
    data = [{"prompt": r.rendered_prompt, "answer": r.columns["answer"]} for r in rows]
    before = held_out(model, tokenizer, config)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = GRPOTrainer(
            model=model,
            reward_funcs=[get_reward_function(name) for name in config.reward_funcs],
            args=trl_config(config, tmp, steps),
            train_dataset=Dataset.from_list(data),
            processing_class=tokenizer,
        )
        trainer.train()
        history = [r for r in trainer.state.log_history if "reward" in r]
    after = held_out(trainer.model, tokenizer, config)
    first, last = history[0], history[-1]
    return {
        "before": before,
        "after": after,
        "reward_first": first["reward"],
        "reward_last": last["reward"],
    }


def train_aapo(seed: int, steps: int, out: Path) -> dict:
    command = [sys.executable, "-m", "aapo", "train", "--algorithm", "grpo", "--seed", str(seed)]
    command += ["--max_steps", str(steps), "--output_dir", str(out), "--report_to", "[]"]
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    return {
        "before": summary["held_out_accuracy_before"],
        "after": summary["held_out_accuracy_after"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--steps", type=int, default=None, help="default: the recipe's")
    parser.add_argument("--trl-only", action="store_true")
    parser.add_argument("--out", type=Path, default=Path("runs/trl-anchor"))
    args = parser.parse_args()
    if importlib.util.find_spec("trl") is None:
        print("trl is not installed (pip install trl==1.16.0); nothing measured")
        return
    from aapo.config import load_config
    from aapo.training.config import TrainConfig

    config = replace(load_config(TrainConfig, "default"), seed=args.seed)
    steps = args.steps or config.max_steps
    results = {"trl grpo": train_trl(config, steps)}
    if not args.trl_only:
        results["aapo grpo"] = train_aapo(args.seed, steps, args.out / f"aapo-seed-{args.seed}")
    for name, r in results.items():
        gain = 100 * (r["after"] - r["before"])
        print(
            f"{name}: held-out {r['before']:.3f} -> {r['after']:.3f} ({gain:+.1f} pts)"
            f" over {steps} steps, seed {args.seed}"
        )
    print(json.dumps(results))


if __name__ == "__main__":
    main()
