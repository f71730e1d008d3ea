"""Figures and the report from synthetic run directories."""

import re

import pytest

from aapo.compare import plot, write_outputs
from aapo.compare.plots import PANELS, write_figures
from aapo.compare.report import render_report
from aapo.compare.runs import find_runs, group_runs

PNG = b"\x89PNG\r\n\x1a\n"


def _comparison(tmp_path, make_run, records, accuracies, eval_curve=True):
    """Runs of each variant and seed; accuracies[variant][seed] = (before, after)."""
    for variant, by_seed in accuracies.items():
        algorithm = "aapo" if variant.startswith("aapo") else variant
        for seed, (before, after) in by_seed.items():
            rows = records(4, 0.1 * seed, algorithm == "aapo")
            if eval_curve:
                rows.insert(0, {"step": 0, "eval/accuracy": before, "eval/accuracy/level_1": 0.9})
                rows.append({"step": 4, "eval/accuracy": after, "eval/accuracy/level_1": 1.0})
            make_run(
                tmp_path / variant / f"seed-{seed}",
                algorithm,
                seed,
                rows,
                summary={
                    "variant": variant,
                    "held_out_accuracy_before": before,
                    "held_out_accuracy_after": after,
                },
                momentum_clip=variant != "aapo_noclip",
            )
    return group_runs(find_runs([tmp_path]))


def test_figures_are_png_files_with_a_panel_per_logged_metric(tmp_path, make_run, records):
    groups = _comparison(
        tmp_path / "runs",
        make_run,
        records,
        {"aapo": {1: (0.5, 0.6), 2: (0.4, 0.5)}, "grpo": {1: (0.5, 0.55), 2: (0.4, 0.45)}},
    )
    paths = write_figures(groups, tmp_path / "fig", smooth=2)
    assert set(paths) == {p.name for p in PANELS} | {"eval_accuracy_levels", "overview"}
    for path in paths.values():
        data = path.read_bytes()
        assert data.startswith(PNG) and len(data) > 5000, path


def test_panels_without_data_are_skipped(tmp_path, make_run, records):
    groups = _comparison(
        tmp_path / "runs", make_run, records, {"grpo": {1: (0.5, 0.6)}}, eval_curve=False
    )
    paths = write_figures(groups, tmp_path / "fig")
    assert "reward" in paths and "loss" in paths
    # no AAPO run: no momentum, no reference reward; no eval lines: no held-out panel
    for absent in (
        "momentum_mean",
        "momentum_mass",
        "momentum_clip",
        "reference_reward",
        "eval_accuracy",
        "eval_accuracy_levels",
    ):
        assert absent not in paths
        assert not (tmp_path / "fig" / f"{absent}.png").exists()


def test_report_numbers_from_fixtures(tmp_path, make_run, records):
    groups = _comparison(
        tmp_path / "runs",
        make_run,
        records,
        {
            "aapo": {1: (0.5, 0.6), 2: (0.5, 0.7), 3: (0.5, 0.8)},
            "aapo_noclip": {1: (0.5, 0.55), 2: (0.5, 0.65), 3: (0.5, 0.95)},
            "grpo": {1: (0.5, 0.5), 2: (0.5, 0.6), 3: (0.5, 0.9)},
        },
    )
    text = render_report(groups, {}, tmp_path / "report.md", baseline="grpo", target=0.65)
    # aapo after: 0.6, 0.7, 0.8: mean 0.7, s = 0.1, se = 0.057735, half = 4.302653·se = 0.248414
    # IQM of 3 runs cuts none: 0.7; its bootstrap over 3 seeds spans the resample means,
    # 0.6 (seed 1 thrice) to 0.8 (seed 3 thrice)
    row = (
        "| aapo | 3 | 0.500 [0.500, 0.500] | 0.700 [0.452, 0.948] | 0.700 [0.600, 0.800] "
        "| +0.200 [-0.048, +0.448]"
    )
    assert row in text
    # paired to grpo: 0.1, 0.1, -0.1 → +0.033 [-0.254, +0.320] (worked in test_compare_stats);
    # bootstrap over 3 seeds: [-0.1, +0.1], the smallest and largest difference
    # P(aapo > grpo): aapo 0.6, 0.7, 0.8 against grpo 0.5, 0.6, 0.9:
    # 0.6 wins 1, ties 1, loses 1 → 1.5; 0.7 and 0.8 win 2 each → 5.5 / 9 = 0.611;
    # one seed thrice gives 1 (seeds 1, 2) or 0 (seed 3) → [0, 1]
    assert (
        "| aapo | 3 | +0.033 [-0.254, +0.320] | +0.033 [-0.100, +0.100] | 2/3 "
        "| 0.611 [0.000, 1.000] | no clear difference at 3 seeds" in text
    )
    # aapo_noclip - grpo: 0.05, 0.05, 0.05 → zero spread, interval [0.05, 0.05] above zero
    # P: 0.55, 0.65, 0.95 against 0.5, 0.6, 0.9 win 1 + 2 + 3 = 6 of 9 pairs = 0.667; a
    # resample with some seed twice wins 7/9 and one seed thrice 1, so 6/9 is the least,
    # with P(all three seeds drawn) = 3!/27 = 0.222 > 0.025 → [0.667, 1.000]
    assert (
        "| aapo_noclip | 3 | +0.050 [+0.050, +0.050] | +0.050 [+0.050, +0.050] | 3/3 "
        "| 0.667 [0.667, 1.000] | higher than grpo |" in text
    )
    assert "## Paired difference to grpo" in text and "| P(variant > grpo) (bootstrap) |" in text
    assert "Bootstrap intervals are 95% percentile intervals" in text
    # levels: the last logged level_1 value of every run is 1.0
    assert "level 1" in text and "1.000 [1.000, 1.000]" in text
    # steps to reach 0.65: eval at steps 0 and 4 only; aapo's seeds 2, 3 reach it at step 4
    assert "## Steps to reach 0.650 (--target)" in text
    assert "| aapo | 2/3 | 4.0 [4.0, 4.0] |" in text
    # loss alternates 0.01, 0, 0.01, 0: mean 0.005, variance 4 · 2.5e-5 / 3 = 3.33e-05
    assert "| grpo | 3.33e-05 [3.33e-05, 3.33e-05] | 0.125 [0.125, 0.125] | 0.500" in text
    # the variant's override is the only config difference the header lists
    assert "- `momentum_clip`: aapo True, aapo_noclip False, grpo True" in text


def test_default_target_is_the_baselines_final_accuracy(tmp_path, make_run, records):
    groups = _comparison(
        tmp_path / "runs",
        make_run,
        records,
        {"aapo": {1: (0.5, 0.7), 2: (0.5, 0.8)}, "gpg": {1: (0.5, 0.6), 2: (0.5, 0.6)}},
    )
    text = render_report(groups, {}, tmp_path / "report.md")
    # no grpo among the runs: the first variant is the baseline
    assert "## Paired difference to aapo" in text
    assert "## Steps to reach 0.750 (aapo's mean final held-out accuracy)" in text
    with pytest.raises(ValueError, match="baseline 'grpo' is not among the runs"):
        render_report(groups, {}, tmp_path / "report.md", baseline="grpo")


def test_steps_to_target_fall_back_on_smoothed_training_accuracy(tmp_path, make_run, records):
    for seed in (1, 2):
        make_run(tmp_path / f"s{seed}", "grpo", seed, records(4, 0.1 * seed, False))
    groups = group_runs(find_runs([tmp_path]))
    text = render_report(groups, {}, tmp_path / "report.md", target=0.29)
    # training accuracy = 0.1·seed + 0.05·step; trailing means over up to 10 steps:
    # seed 1: 0.15, 0.175, 0.2, 0.225 (never 0.29); seed 2: 0.25, 0.275, 0.30 (step 3), 0.325
    assert "Measured on training accuracy (trailing mean over 10 steps" in text
    assert "| grpo | 1/2 | 3.0 (1 seed) |" in text


def test_runs_differing_within_a_variant_are_flagged(tmp_path, make_run, records):
    make_run(tmp_path / "a1", "gpg", 1, records(2, 0.1, False), learning_rate=1e-6)
    make_run(tmp_path / "a2", "gpg", 2, records(2, 0.1, False), learning_rate=1e-5)
    text = render_report(group_runs(find_runs([tmp_path])), {}, tmp_path / "report.md")
    assert "**warning**: runs of gpg differ in `learning_rate`" in text
    assert "No held-out accuracy in these runs" in text


def test_how_a_run_was_started_and_fields_newer_than_it_are_no_difference(
    tmp_path, make_run, records
):
    """A restarted attempt (--overwrite_output_dir) and a run from before synthetic_levels
    existed are the same runs as their seeds' others; a real difference still shows."""
    make_run(tmp_path / "a1", "gpg", 1, records(2, 0.1, False), overwrite_output_dir=True)
    make_run(tmp_path / "a2", "gpg", 2, records(2, 0.1, False), synthetic_levels=[1, 2, 3, 4, 5])
    make_run(tmp_path / "b1", "grpo", 1, records(2, 0.1, False), synthetic_levels=[1, 2])
    make_run(tmp_path / "b2", "grpo", 2, records(2, 0.1, False), synthetic_levels=[1, 2])
    text = render_report(group_runs(find_runs([tmp_path])), {}, tmp_path / "report.md")
    assert "warning" not in text and "overwrite_output_dir" not in text
    assert "- `synthetic_levels`: gpg [1, 2, 3, 4, 5], grpo [1, 2]" in text


def test_plot_writes_report_with_relative_figure_links(tmp_path, make_run, records):
    _comparison(tmp_path / "runs", make_run, records, {"grpo": {1: (0.5, 0.6), 2: (0.4, 0.6)}})
    report = plot([tmp_path / "runs"], tmp_path / "out")
    text = report.read_text(encoding="utf-8")
    assert report == tmp_path / "out" / "report.md"
    assert "![reward](figures/reward.png)" in text
    assert (tmp_path / "out" / "figures" / "reward.png").is_file()
    with pytest.raises(ValueError, match="no runs"):
        write_outputs({}, tmp_path / "none", None, None, 1)


def test_cli_plot_and_compare_name_bad_input(tmp_path, make_run, records, capsys):
    from aapo.cli import main

    run = make_run(tmp_path / "one", "gpg", 1, records(3, 0.1, False))
    main(["plot", str(run)])  # one RUN_DIR: figures and report go into it
    assert (run / "report.md").is_file() and (run / "figures" / "loss.png").is_file()
    cases = [
        (["plot", str(run), str(run)], "give --output DIR"),
        (["plot", str(run), "--smooth", "0"], "--smooth must be >= 1"),
        (["plot", str(run), "--target", "1.5"], r"--target must be an accuracy in \[0, 1\]"),
        (["plot", str(run), "--baseline", "grpo"], "baseline 'grpo' is not among the runs"),
        (
            [
                "compare",
                "--algorithms",
                "aapo,gpg",
                "--baseline",
                "grpo",
                "--output_dir",
                str(tmp_path / "c"),
            ],
            r"--baseline 'grpo' is not among --algorithms \(aapo, gpg\)",
        ),
        (["compare", "--algorithms", "aapo,foo"], "unknown algorithm or variant 'foo'"),
    ]
    for argv, message in cases:
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2, argv
        assert re.search(message, capsys.readouterr().err), argv
    assert not (tmp_path / "c").exists()  # nothing trained or written
