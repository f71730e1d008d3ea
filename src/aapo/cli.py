"""`aapo` command line: parse → config → call. No logic lives here.

    aapo train [--config RECIPE_OR_YAML] [--resume [PATH]] [--key value ...]
    aapo reference [--config RECIPE_OR_YAML] --reference_cache DIR [--completions FILE.jsonl]
                   [--key value ...]
    aapo eval  [--config YAML] [--key value ...]
    aapo data synthetic --output_dir DIR [--num_train N] [--num_test N] [--seed S]
    aapo compare [--algorithms aapo,grpo,gpg] [--seeds 3] [--config YAML] [--key value ...]
    aapo plot RUN_DIR... [--output DIR]

Any config field can be overridden as `--key value` (or `key=value`); `aapo train --help`
lists them with their documentation.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys

from aapo import __version__
from aapo.config import ConfigError, load_config, recipe_names
from aapo.data.datasets import DatasetError
from aapo.model_sources import ModelError


def _fields_help(cls: type) -> str:
    lines = ["config keys (override with --key value):"]
    for f in dataclasses.fields(cls):
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        lines.append(f"  {f.name} (default {default!r}): {f.metadata.get('help', '')}")
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    from aapo.evaluation import EvalConfig

    parser = argparse.ArgumentParser(
        prog="aapo", description="RL post-training for reasoning: AAPO and its baselines."
    )
    parser.add_argument("--version", action="version", version=f"aapo {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_train_parsers(commands)
    evaluate = commands.add_parser(
        "eval",
        help="pass@1 on math benchmarks (Table 1 of the paper)",
        epilog=_fields_help(EvalConfig),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    evaluate.add_argument("--config", default=None, help="YAML file with EvalConfig keys")
    _add_data_parser(commands)
    _add_compare_parsers(commands)
    return parser


def _add_train_parsers(commands: argparse._SubParsersAction) -> None:
    """`aapo train` and `aapo reference`: both read a TrainConfig."""
    from aapo.training.config import TrainConfig

    recipes = f"YAML file or shipped recipe ({', '.join(recipe_names())}); default: default"
    raw = argparse.RawDescriptionHelpFormatter
    train = commands.add_parser(
        "train",
        help="train a policy (default: AAPO on the bundled tiny model)",
        epilog=_fields_help(TrainConfig),
        formatter_class=raw,
    )
    train.add_argument("--config", default="default", help=recipes)
    train.add_argument(
        "--resume",
        nargs="?",
        const="latest",
        default=None,
        metavar="PATH",
        help="continue from the latest checkpoint in output_dir, or from PATH",
    )
    reference = commands.add_parser(
        "reference",
        help="precompute the frozen reference's rollouts into reference_cache (AAPO)",
        description="Takes the same config as `aapo train` (so the cache matches the run); "
        "several processes fill one cache under `accelerate launch -m aapo reference ...`; "
        "`--sampler vllm` samples with an in-process vLLM engine (the route on GPUs).",
        epilog=_fields_help(TrainConfig),
        formatter_class=raw,
    )
    reference.add_argument("--config", default="default", help=recipes)
    reference.add_argument(
        "--completions",
        default=None,
        metavar="FILE.jsonl",
        help="import the reference's completions sampled elsewhere (SGLang, a serving fleet) "
        "instead of sampling: graded with the run's rewards; README 'The reference from vLLM'",
    )


def _add_data_parser(commands: argparse._SubParsersAction) -> None:
    data = commands.add_parser("data", help="generate the bundled synthetic task as JSONL")
    data_kinds = data.add_subparsers(dest="kind", required=True, metavar="KIND")
    synthetic = data_kinds.add_parser(
        "synthetic", help="arithmetic problems with levels 1-5, train/test splits"
    )
    synthetic.add_argument("--output_dir", required=True)
    synthetic.add_argument("--num_train", type=int, default=2000)
    synthetic.add_argument("--num_test", type=int, default=500)
    synthetic.add_argument("--seed", type=int, default=42)
    synthetic.add_argument(
        "--levels", default="1,2,3,4,5", help="comma-separated difficulty levels"
    )


def _add_compare_parsers(commands: argparse._SubParsersAction) -> None:
    """`aapo compare` and `aapo plot`. No abbreviations: a train option `--seed` passed
    through must not be read as `--seeds`, nor `--output` as `--output_dir`."""
    raw = argparse.RawDescriptionHelpFormatter
    compare = commands.add_parser(
        "compare",
        help="train variants × seeds, then figures and a report with 95%% intervals",
        description="Any other --key value is a train option passed to every run.",
        epilog=_COMPARE_EPILOG,
        formatter_class=raw,
        allow_abbrev=False,
    )
    compare.add_argument(
        "--algorithms",
        default="aapo,grpo,gpg",
        help="comma-separated algorithms or variants (e.g. aapo_noclip); default aapo,grpo,gpg",
    )
    compare.add_argument("--seeds", default="3", help="N (seeds 1..N) or a list 1,5,9; default 3")
    compare.add_argument("--config", default="default", help="train YAML or shipped recipe")
    compare.add_argument("--output_dir", default="runs/compare", help="default runs/compare")
    compare.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="runs at once, the cores split between them; default 1 (all cores to one run)",
    )
    _add_report_options(compare)
    plot = commands.add_parser(
        "plot",
        help="figures and report from existing run directories",
        allow_abbrev=False,
    )
    plot.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run or compare directory")
    plot.add_argument(
        "--output", default=None, help="where figures/ and report.md go; default: the one RUN_DIR"
    )
    _add_report_options(plot)


def _add_report_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--baseline", default=None, help="variant to pair against; default grpo, else the first"
    )
    parser.add_argument(
        "--target",
        type=float,
        default=None,
        help="held-out accuracy for 'steps to reach'; default the baseline's final accuracy",
    )
    parser.add_argument(
        "--smooth", type=int, default=1, help="trailing mean over N steps in the training curves"
    )


_COMPARE_EPILOG = """\
Each run is an ordinary `aapo train` directory OUTPUT_DIR/<variant>/seed-<s>/. Rerunning the
same command keeps finished runs, resumes killed ones from their latest checkpoint (set
--save_steps) and restarts the others; then it writes OUTPUT_DIR/figures/*.png and
OUTPUT_DIR/report.md.
Threads per run: cores // jobs (at least 1), capped by OMP_NUM_THREADS when it is set."""


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    parser = _parser()
    args, rest = parser.parse_known_args(argv)
    from aapo.metrics import MetricsFileError
    from aapo.rewards.errors import RewardReturnError
    from aapo.rewards.reward_process import RewardWorkerError
    from aapo.training.checkpoint import CheckpointError

    try:
        if args.command == "train":
            _train(args, rest)
        elif args.command == "reference":
            _reference(args, rest)
        elif args.command == "eval":
            _eval(args, rest)
        elif args.command in ("compare", "plot"):
            _compare_or_plot(args, rest, parser)
        else:
            if rest:
                parser.error(f"unrecognised arguments: {' '.join(rest)}")
            _data(args)
    except (
        ConfigError,
        DatasetError,
        ModelError,
        FileNotFoundError,
        CheckpointError,
        MetricsFileError,
        RewardWorkerError,
        RewardReturnError,
    ) as err:
        print(f"aapo {args.command}: error: {err}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:  # Ctrl-C: what was done is kept (each command says what), quietly
        print(f"aapo {args.command}: interrupted", file=sys.stderr)
        sys.exit(130)


def _train(args: argparse.Namespace, rest: list[str]) -> None:
    from aapo.training.config import TrainConfig
    from aapo.training.trainer import train

    overrides = [*rest, *(["--resume_from_checkpoint", args.resume] if args.resume else [])]
    summary = train(load_config(TrainConfig, args.config, overrides))
    before, after = summary.get("held_out_accuracy_before"), summary.get("held_out_accuracy_after")
    if after is not None:
        shown = f"{before:.3f} -> {after:.3f}" if before is not None else f"{after:.3f}"
        print(f"held-out accuracy (greedy): {shown}")
    print(json.dumps({k: v for k, v in summary.items() if k != "final_metrics"}))


def _compare_or_plot(
    args: argparse.Namespace, rest: list[str], parser: argparse.ArgumentParser
) -> None:
    from pathlib import Path

    from aapo.compare import compare, plot

    report = dict(baseline=args.baseline, target=args.target, smooth=args.smooth)
    if args.command == "compare":
        runs = dict(algorithms=args.algorithms, seeds=args.seeds, config=args.config)
        path = compare(
            **runs, options=rest, output_dir=Path(args.output_dir), jobs=args.jobs, **report
        )
    else:
        if rest:
            parser.error(f"aapo plot: unrecognised arguments: {' '.join(rest)}")
        if args.output is None and len(args.run_dirs) > 1:
            parser.error("aapo plot: give --output DIR when plotting several RUN_DIRs")
        output = Path(args.output or args.run_dirs[0])
        path = plot(args.run_dirs, output, **report)
    print(f"report: {path}")
    print(f"figures: {path.parent / 'figures'}")


def _reference(args: argparse.Namespace, rest: list[str]) -> None:
    from aapo.training.config import TrainConfig
    from aapo.training.reference.build import build_reference_cache
    from aapo.training.reference.importer import import_reference_completions

    config = load_config(TrainConfig, args.config, rest)
    if args.completions is None:
        print(build_reference_cache(config))
    else:
        print(import_reference_completions(config, args.completions))


def _eval(args: argparse.Namespace, rest: list[str]) -> None:
    from aapo.evaluation import EvalConfig, run_eval

    run_eval(load_config(EvalConfig, args.config, rest))


def _data(args: argparse.Namespace) -> None:
    from aapo.data.synthetic import write_splits

    levels = tuple(int(level) for level in args.levels.split(","))
    paths = write_splits(args.output_dir, args.num_train, args.num_test, args.seed, levels)
    for split, path in paths.items():
        print(f"{split}: {path}")
