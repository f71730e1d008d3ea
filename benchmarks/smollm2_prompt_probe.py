"""Which prompt gives SmolLM2-135M-Instruct a learning signal under the strict answer rule?

For each prompt setup (system prompt, worked examples), samples G completions (T = 1 unless
set) for a few training problems of each level and greedy answers for held-out ones, through
the vLLM engine the training run uses, and counts boxed answers and strictly right ones (the paper's
rule: the last `\\boxed{}`, no last-number fallback). A setup gives GRPO a signal on a
problem only when its group is mixed (some right, some wrong): that fraction is printed too.

    VLLM_ENABLE_V1_MULTIPROCESSING=0 OMP_NUM_THREADS=2 \\
        python benchmarks/smollm2_prompt_probe.py [--levels 1,2,3] [--problems 8] [--G 8] \\
        [--temperature 1]
"""

from __future__ import annotations

import argparse
import json

from aapo.data.datasets import held_out_problems, load_problems
from aapo.data.rows import prepare_rows
from aapo.rewards.answers import last_boxed
from aapo.rewards.grading import get_grader
from aapo.rollout import SamplingParams
from aapo.training.config import TrainConfig
from aapo.training.trainer import Trainer

BOXED = "Put the final answer in \\boxed{}."
SETUPS = {  # name: (system prompt, prompt_examples)
    "system": (BOXED, None),
    "one_shot": (None, "boxed_arithmetic"),
    "system+one_shot": (BOXED, "boxed_arithmetic"),
}


def probe(trainer: Trainer, rows: list[dict], setup: tuple, params: SamplingParams) -> dict:
    system, examples = setup
    prepared, _ = prepare_rows(rows, trainer.tokenizer, system, "plain", 512, examples)
    groups = trainer.policy_sampler.generate([r.prompt_ids for r in prepared], params)
    texts = [[s.text for s in g] for g in groups]
    golds = [r.columns["answer"] for r in prepared]
    answers = [gold for gold, group in zip(golds, texts, strict=True) for _ in group]
    flat = get_grader().grade([t for group in texts for t in group], answers)
    right = [v.correct for v in flat]
    n = params.n
    per_group = [sum(right[i * n : (i + 1) * n]) for i in range(len(texts))]
    boxed = sum(last_boxed(t) is not None for g in texts for t in g)
    return {
        "completions": len(right),
        "boxed": boxed,
        "right": sum(right),
        "mixed_groups": sum(0 < k < n for k in per_group),
        "groups": len(per_group),
        "example": texts[0][0][:200],
        "prompt_tokens": len(prepared[0].prompt_ids),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--levels", default="1,2,3")
    parser.add_argument("--problems", type=int, default=8, help="training problems per level")
    parser.add_argument("--held-out", type=int, default=90, help="held-out problems (greedy)")
    parser.add_argument("--G", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--setups", default=",".join(SETUPS))
    args = parser.parse_args()
    levels = [int(x) for x in args.levels.split(",")]
    config = TrainConfig(
        model_name_or_path="smollm2-135m",
        sampler="vllm",
        output_dir="/tmp/smollm2-probe",
        overwrite_output_dir=True,
        max_steps=1,
        report_to=[],
        synthetic_levels=levels,
        num_generations=args.G,
        per_device_train_batch_size=args.G,
        gradient_accumulation_steps=1,
        max_completion_length=args.max_tokens,
        algorithm="grpo",
    )
    trainer = Trainer(config)
    train = load_problems("synthetic", "train", 7, 200 * len(levels), levels)
    train = [r for lvl in levels for r in [r for r in train if r["level"] == lvl][: args.problems]]
    test = held_out_problems(7, args.held_out, levels)
    sampled = SamplingParams(n=args.G, temperature=args.temperature, max_new_tokens=args.max_tokens)
    greedy = SamplingParams(n=1, temperature=0.0, max_new_tokens=args.max_tokens)
    out = {}
    for name in args.setups.split(","):
        out[name] = {
            "sampled_by_level": {
                lvl: probe(trainer, [r for r in train if r["level"] == lvl], SETUPS[name], sampled)
                for lvl in levels
            },
            "greedy_held_out": probe(trainer, test, SETUPS[name], greedy),
        }
        print(name, json.dumps(out[name], indent=1), flush=True)


if __name__ == "__main__":
    main()
