"""Rebuild the bundled tiny math model from nothing: tokenizer, random init, two warm-up stages.

    PYTHONPATH=src python scripts/build_tiny_model.py                 # rebuild it in place
    PYTHONPATH=src python scripts/build_tiny_model.py --measure-only  # re-measure, write nothing

Steps: (1) train a byte-level BPE tokenizer on train-side problems and solutions (digits stay
single tokens, the answer-format tags are whole, non-special tokens, ChatML roles); (2) a
randomly initialised Qwen2 model; (3) supervised warm-up on train-side problems with worked
solutions in the paper's format, loss on the completion only, stopped early on purpose: every
`--eval-every` steps, greedy accuracy per level on valid-side problems is measured and training
stops at the first check where level 1 is nearly solved (>= --stop-easy) and levels 2-3 average
--stop-mid; (4) the habit stage: `--habit-steps` more steps on a mix where a fraction
`--careless-fraction` of the worked solutions drop every carry and borrow
(`Problem.solution(careless=True)`), so the model makes those slips by habit (greedy decoding
follows the majority) while the careful answer keeps a sizeable share of the sampled ones: the
headroom the default RL run recovers with the accuracy reward; (5) save in float32
safetensors, reload through `from_pretrained` and measure per-level accuracy on test-side
problems (greedy, and sampled at T=1, and how often greedy makes the slip) into
`build_report.json` beside the model.

Why a habit: RL on a model this small cannot teach new arithmetic in a few minutes, and greedy
accuracy only moves where the model's most likely answer is wrong while a right one is likely
enough to be sampled. A warm-up taught by a careless teacher is a clean instance of that (the
skill is there, used one time in five), and it is the kind of gain RL with a verifier is known
to give on real models: making reliable what the model can already do.

Deterministic for a given seed and thread count (seeded torch, deterministic algorithms, data
from `random.Random`); other CPUs or library versions may stop a check earlier or later, which
the stop rule keeps to a similar accuracy profile. Stage 1 took 21 min on 2 free CPU cores, the
habit stage with the final measurement 10 min on a loaded machine;
`--from-stage1 DIR` starts at step (4) from a model that steps (1)-(3) wrote. Left out:
learning-rate search, any GPU path, packing of sequences.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import shutil
import time
from pathlib import Path

import torch
import transformers
from tokenizers import (
    AddedToken,
    Regex,
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    trainers,
)
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
)

from aapo.data.synthetic import LEVELS, Problem, generate_structured, sample_problem, split_of

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "src" / "aapo" / "assets" / "tiny-math-lm"
PAD, BOS_TURN, EOS = "<|endoftext|>", "<|im_start|>", "<|im_end|>"
FORMAT_TOKENS = ["<think>", "</think>", "<answer>", "</answer>", "\\boxed{"]
# ChatML, as Qwen uses; a system turn is rendered like any other turn.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)
FORMAT_RE = re.compile(r"^\s*<think>.*?</think>\s*<answer>.*?</answer>\s*$", re.DOTALL)
BOXED_RE = re.compile(r"\\boxed\{(-?\d+)\}")
# Contractions, letter runs (with one leading non-letter), single digits, punctuation runs,
# newlines, spaces: the split Qwen2 uses.
SPLIT_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def train_side_stream(seed: str) -> random.Random:
    return random.Random(f"build/{seed}")


def draw_train(rng: random.Random) -> Problem:
    """A train-side problem, levels uniform (rejection keeps the other sides unseen)."""
    level = rng.choice(LEVELS)
    while True:
        problem = sample_problem(rng, level)
        if split_of(problem.text) == "train":
            return problem


def build_tokenizer(seed: int, vocab_size: int) -> Tokenizer:
    rng = train_side_stream(f"{seed}/tokenizer")
    problems = [draw_train(rng) for _ in range(20_000)]
    # Tags are added whole after training, so the BPE merges only cover words and symbols.
    solutions = [p.solution() for p in problems]
    for tag in FORMAT_TOKENS:
        solutions = [s.replace(tag, " ") for s in solutions]
    corpus = [p.text for p in problems] + solutions + ["system\nuser\nassistant\n"] * 100
    tok = Tokenizer(models.BPE())
    # Exactly what transformers' Qwen2Tokenizer installs when it loads a qwen2 checkpoint (it
    # replaces the pre-tokenizer from tokenizer.json), so training and loading agree; one token
    # per digit keeps arithmetic learnable digit by digit.
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(SPLIT_PATTERN), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[PAD, BOS_TURN, EOS],
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer)
    # Not special: decoding with skip_special_tokens=True must keep the answer format.
    tok.add_tokens([AddedToken(t, normalized=False, special=False) for t in FORMAT_TOKENS])
    return tok


def save_tokenizer(tok: Tokenizer, out: Path) -> PreTrainedTokenizerFast:
    """Save, then reload through AutoTokenizer: training uses exactly what users will load."""
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token=PAD, eos_token=EOS, additional_special_tokens=[BOS_TURN]
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(out)
    # Written by hand so transformers 4.x (Qwen2TokenizerFast reads tokenizer.json as is) and
    # 5.x (Qwen2Tokenizer rebuilds the same pre-tokenizer) both load it.
    config = {
        "tokenizer_class": "Qwen2TokenizerFast",
        "bos_token": None,
        "eos_token": EOS,
        "pad_token": PAD,
        "unk_token": None,
        "additional_special_tokens": [BOS_TURN],
        "model_max_length": 512,
        "clean_up_tokenization_spaces": False,  # it would rewrite " ," and " ." in model text
        "add_prefix_space": False,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
    loaded = AutoTokenizer.from_pretrained(out)
    rng = train_side_stream("tokenizer-check")
    for problem in (draw_train(rng) for _ in range(200)):
        text = problem.text + " " + problem.solution()
        if loaded(text)["input_ids"] != tok.encode(text).ids:
            raise RuntimeError(f"the saved tokenizer does not reload the same: {text!r}")
    return loaded


def build_model(tokenizer, args: argparse.Namespace) -> Qwen2ForCausalLM:
    config = Qwen2Config(
        vocab_size=-(-len(tokenizer) // 64) * 64,  # round up: aligned matmuls
        hidden_size=args.hidden,
        intermediate_size=args.hidden * 8 // 3 // 64 * 64,
        num_hidden_layers=args.layers,
        num_attention_heads=args.hidden // 64,
        num_key_value_heads=args.hidden // 64,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
    )
    model = Qwen2ForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model


def prompt_ids(tokenizer, problem: str) -> list[int]:
    ids = tokenizer.apply_chat_template(
        [{"role": "user", "content": problem}], add_generation_prompt=True, tokenize=True
    )
    return list(ids["input_ids"] if hasattr(ids, "keys") else ids)


def sft_batch(
    tokenizer, problems: list[Problem], careless: list[bool] | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded input ids, attention mask and labels (-100 on prompt and padding); the
    problems flagged in `careless` get the carry-dropping solution."""
    rows = []
    for p, slip in zip(problems, careless or [False] * len(problems), strict=True):
        prompt = prompt_ids(tokenizer, p.text)
        completion = tokenizer(p.solution(careless=slip), add_special_tokens=False)["input_ids"]
        rows.append((prompt, [*completion, tokenizer.eos_token_id]))
    width = max(len(a) + len(b) for a, b in rows)
    ids = torch.full((len(rows), width), tokenizer.pad_token_id)
    labels = torch.full((len(rows), width), -100)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (prompt, completion) in enumerate(rows):
        n = len(prompt) + len(completion)
        ids[i, :n] = torch.tensor(prompt + completion)
        labels[i, len(prompt) : n] = torch.tensor(completion)
        mask[i, :n] = 1
    return ids, mask, labels


@torch.no_grad()
def generate(model, tokenizer, problems: list[str], temperature: float, n: int = 1) -> list[str]:
    """Completions ([len(problems) * n], grouped by problem), batched with left padding."""
    model.eval()
    texts: list[str] = []
    for start in range(0, len(problems), 128):
        prompts = [prompt_ids(tokenizer, p) for p in problems[start : start + 128]]
        width = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), width), tokenizer.pad_token_id)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for i, p in enumerate(prompts):
            ids[i, width - len(p) :] = torch.tensor(p)
            mask[i, width - len(p) :] = 1
        sampling = {"do_sample": True, "temperature": temperature, "top_k": 0, "top_p": 1.0}
        out = model.generate(
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=64,
            num_return_sequences=n,
            **(sampling if temperature > 0 else {"do_sample": False}),
        )
        texts += tokenizer.batch_decode(out[:, width:], skip_special_tokens=True)
    return texts


def score(texts: list[str], problems: list[Problem], n: int) -> dict[str, float]:
    """Accuracy: the last \\boxed{integer} equals the answer; format: the paper's template;
    `slipped`: of the problems careless arithmetic gets wrong, how often the careless answer
    was given. With n samples per problem, also how often all n are right or all wrong."""
    right, slipped = [], []
    for text, problem in zip(texts, problems, strict=True):
        boxed = BOXED_RE.findall(text)
        given = int(boxed[-1]) if boxed else None
        right.append(given == problem.answer)
        if problem.slips:
            slipped.append(given == problem.slipped_values()[-1])
    out = {
        "accuracy": sum(right) / len(texts),
        "format": sum(bool(FORMAT_RE.match(t)) for t in texts) / len(texts),
        "slipped": sum(slipped) / max(1, len(slipped)),
    }
    if n > 1:
        groups = [sum(right[i : i + n]) for i in range(0, len(right), n)]
        out["groups_all_right"] = sum(g == n for g in groups) / len(groups)
        out["groups_all_wrong"] = sum(g == 0 for g in groups) / len(groups)
    return out


def evaluate(model, tokenizer, by_level: dict[int, list[Problem]], temperature: float, n: int = 1):
    report = {}
    for level, problems in by_level.items():
        texts = generate(model, tokenizer, [p.text for p in problems], temperature, n)
        report[level] = score(texts, [p for p in problems for _ in range(n)], n)
    return report


def held_out(split: str, per_level: int, seed: int) -> dict[int, list[Problem]]:
    return {lvl: generate_structured(per_level, seed, (lvl,), split=split) for lvl in LEVELS}


def sft_step(model, opt: torch.optim.Optimizer, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
    model.train()
    ids, mask, labels = batch
    loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)
    return loss


def habit(model, tokenizer, args: argparse.Namespace) -> dict:
    """Step (4): a fixed number of steps at a constant rate on the careful/careless mix, each
    solution careless with probability `--careless-fraction` (its own seeded coin)."""
    opt = torch.optim.AdamW(
        model.parameters(), lr=args.habit_lr, betas=(0.9, 0.98), weight_decay=0.01
    )
    rng, coin = train_side_stream(f"{args.seed}/habit"), random.Random(f"{args.seed}/careless")
    began = time.time()
    for step in range(1, args.habit_steps + 1):
        problems = [draw_train(rng) for _ in range(args.batch_size)]
        careless = [coin.random() < args.careless_fraction for _ in problems]
        loss = sft_step(model, opt, sft_batch(tokenizer, problems, careless))
        if step % args.eval_every == 0 or step == args.habit_steps:
            print(
                f"habit step {step} loss {loss.item():.3f} {time.time() - began:.0f}s", flush=True
            )
    return {"steps": args.habit_steps, "careless_fraction": args.careless_fraction}


def train(model, tokenizer, args: argparse.Namespace) -> dict:
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.98), weight_decay=0.01)
    # Linear warm-up, then constant: the early stop, not a decay, decides where training ends.
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / args.warmup))
    rng = train_side_stream(f"{args.seed}/sft")
    valid = held_out("valid", args.valid_per_level, args.seed)
    history, stop_reason, step, began = [], "max_steps", 0, time.time()
    for step in range(1, args.max_steps + 1):
        loss = sft_step(
            model, opt, sft_batch(tokenizer, [draw_train(rng) for _ in range(args.batch_size)])
        )
        sched.step()
        if step % args.eval_every == 0:
            acc = {lvl: r["accuracy"] for lvl, r in evaluate(model, tokenizer, valid, 0.0).items()}
            acc = {lvl: round(a, 3) for lvl, a in acc.items()}
            history.append({"step": step, "loss": round(loss.item(), 4), "valid_greedy": acc})
            print(
                f"step {step} loss {loss.item():.3f} valid greedy {acc} {time.time() - began:.0f}s",
                flush=True,
            )
            if acc[1] >= args.stop_easy and (acc[2] + acc[3]) / 2 >= args.stop_mid:
                stop_reason = (
                    f"level 1 >= {args.stop_easy} and mean(levels 2, 3) >= {args.stop_mid}"
                )
                break
    return {"steps": step, "stop_reason": stop_reason, "history": history}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--seed", type=int, default=0)
    # One thread: on a shared 2-core machine two threads per process thrash (5x slower here);
    # 1 and 2 threads gave bit-identical weights on our machine.
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--vocab-size", type=int, default=384)
    parser.add_argument("--hidden", type=int, default=192)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--max-steps", type=int, default=2500)
    parser.add_argument("--eval-every", type=int, default=50)
    parser.add_argument("--valid-per-level", type=int, default=100)
    parser.add_argument("--stop-easy", type=float, default=0.9)
    parser.add_argument("--stop-mid", type=float, default=0.6)
    parser.add_argument("--careless-fraction", type=float, default=0.8)
    parser.add_argument("--habit-steps", type=int, default=150)
    parser.add_argument("--habit-lr", type=float, default=3e-4)
    parser.add_argument(
        "--from-stage1", type=Path, help="start at the habit stage from this stage-1 model"
    )
    parser.add_argument("--test-per-level", type=int, default=200)
    parser.add_argument("--samples", type=int, default=8, help="T=1 samples per test problem")
    parser.add_argument("--measure-only", action="store_true", help="re-measure --out, no build")
    args = parser.parse_args()
    check_args(parser, args)
    if args.measure_only:
        print(table(measure(args, None, time.time())))
        return

    began = time.time()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    torch.use_deterministic_algorithms(True)
    # Build beside the target and swap at the end, so a failed build leaves the old model.
    stage = args.out.with_name(args.out.name + ".partial")
    shutil.rmtree(stage, ignore_errors=True)
    model, tokenizer, run = stage_one(args, stage)
    run = {**run, "habit": habit(model, tokenizer, args)}
    model.save_pretrained(stage)
    shutil.rmtree(args.out, ignore_errors=True)
    stage.rename(args.out)
    for path in args.out.iterdir():
        path.chmod(0o644)  # safetensors writes 0600; installed packages must be world-readable
    report = measure(args, run, began)
    print(table(report))
    print(f"wrote {args.out} in {report['wall_seconds']} s")


def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse the habit stage's bad options before anything is built."""
    if not 0.0 <= args.careless_fraction <= 1.0 or args.habit_steps < 0:
        parser.error(
            f"--careless-fraction must be in [0, 1] and --habit-steps >= 0, got "
            f"{args.careless_fraction} and {args.habit_steps}"
        )
    if args.from_stage1 is not None and not (args.from_stage1 / "config.json").is_file():
        parser.error(f"--from-stage1 {args.from_stage1}: no model there (no config.json)")


def stage_one(args: argparse.Namespace, stage: Path):
    """Steps (1)-(3) into `stage`, or the model `--from-stage1` names, copied there."""
    if args.from_stage1 is None:
        tokenizer = save_tokenizer(build_tokenizer(args.seed, args.vocab_size), stage)
        model = build_model(tokenizer, args)
        return model, tokenizer, train(model, tokenizer, args)
    shutil.copytree(args.from_stage1, stage)
    (stage / "build_report.json").unlink(missing_ok=True)
    model = AutoModelForCausalLM.from_pretrained(stage, dtype=torch.float32)
    return model, AutoTokenizer.from_pretrained(stage), {"stage1": str(args.from_stage1)}


def measure(args: argparse.Namespace, run: dict | None, began: float) -> dict:
    """Test-side accuracy of what ships, reloaded through the public path as users load it;
    written to build_report.json beside the weights after a build (`run` given)."""
    model = AutoModelForCausalLM.from_pretrained(args.out, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(args.out)
    torch.manual_seed(args.seed)
    test = held_out("test", args.test_per_level, seed=0)
    greedy = evaluate(model, tokenizer, test, 0.0)
    sampled = evaluate(model, tokenizer, test, 1.0, n=args.samples)
    settings = {k: v if not isinstance(v, Path) else str(v) for k, v in vars(args).items()}
    settings.pop("out")
    report = {
        "command": "PYTHONPATH=src python scripts/build_tiny_model.py",
        "args": settings,
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
        "parameters": sum(p.numel() for p in model.parameters()),
        "model_bytes": (args.out / "model.safetensors").stat().st_size,
        "wall_seconds": round(time.time() - began, 1),
        **(run or {}),
        "test": {
            "problems": "generate_problems(n, seed=0, levels=(level,), split='test')",
            "problems_per_level": args.test_per_level,
            "max_new_tokens": 64,
            "greedy": {"by_level": greedy},
            "sampled_t1": {"samples_per_problem": args.samples, "top_k": 0, "by_level": sampled},
        },
    }
    if run is not None:
        (args.out / "build_report.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def table(report: dict) -> str:
    greedy = report["test"]["greedy"]["by_level"]
    sampled = report["test"]["sampled_t1"]["by_level"]
    keys = [(greedy, "accuracy"), (greedy, "format"), (sampled, "accuracy"), (sampled, "format")]
    keys += [(sampled, "groups_all_right"), (sampled, "groups_all_wrong"), (greedy, "slipped")]
    lines = [
        "level | greedy acc, format | T=1 acc, format | T=1 groups all right, all wrong"
        " | greedy slipped"
    ]
    for lvl in greedy:
        lines.append(f"{lvl:5} | " + "  ".join(f"{d[lvl][k]:.3f}" for d, k in keys))
    return "\n".join(lines)


if __name__ == "__main__":
    main()
