"""The report's parts for the bundled-task study: the final check apart from the periodic one,
per-level paired differences and tie fractions, the momentum's mass share, the loss note."""

from aapo.compare.report import render_report
from aapo.compare.runs import find_runs, group_runs

# final check (eval_final/*) at steps 0 and 4, seeds 1-3
FINAL = {"aapo": (0.6, 0.7, 0.8), "grpo": (0.5, 0.6, 0.9)}
LEVEL_1 = {"aapo": (0.90, 0.80, 0.85), "grpo": (0.85, 0.80, 0.80)}
LEVEL_5 = {"aapo": (0.00, 0.02, 0.01), "grpo": (0.00, 0.00, 0.01)}


def _records(variant: str, index: int) -> list[dict]:
    aapo = variant == "aapo"
    rows = [
        # the periodic check, on other problems: the report must not read it when a final
        # check was logged (its values would show as 0.400 / 0.100)
        {"step": 0, "eval/accuracy": 0.4, "eval/accuracy/level_1": 0.1},
        {"step": 0, "eval_final/accuracy": 0.5, "eval_final/accuracy/level_1": 0.5,
         "eval_final/accuracy/level_5": 0.0},
    ]  # fmt: skip
    for step in range(1, 5):
        row = {
            "step": step,
            "loss": 0.01 * (step % 2) if aapo else 0.0,
            "frac_reward_zero_std": 0.5,
            "ties/level_1": 0.5 * (step % 2),  # 0.5, 0, 0.5, 0: mean 0.25
        }
        if step % 2:  # level 5 drawn at steps 1 and 3 only
            row["ties/level_5"] = (1.0 if step == 1 else 0.5) if aapo else 1.0
        if aapo:
            row["momentum/mass_share"] = 0.2 if step % 2 else 0.3  # mean 0.25
            row["momentum/tied_mass_share"] = 0.5
        rows.append(row)
    rows.append({"step": 4, "eval/accuracy": 0.1, "eval/accuracy/level_1": 0.1})
    rows.append({
        "step": 4,
        "eval_final/accuracy": FINAL[variant][index],
        "eval_final/accuracy/level_1": LEVEL_1[variant][index],
        "eval_final/accuracy/level_5": LEVEL_5[variant][index],
    })  # fmt: skip
    return rows


def _report(tmp_path, make_run) -> str:
    for variant in FINAL:
        for index, seed in enumerate((1, 2, 3)):
            make_run(
                tmp_path / variant / f"seed-{seed}",
                variant,
                seed,
                _records(variant, index),
                summary={"variant": variant, "held_out_problems": 1000},
            )
    groups = group_runs(find_runs([tmp_path]))
    return render_report(groups, {}, tmp_path / "report.md", baseline="grpo", target=0.65)


def test_final_check_is_read_before_the_periodic_one(tmp_path, make_run):
    text = _report(tmp_path / "runs", make_run)
    # no summary accuracies: before/after from eval_final/accuracy at steps 0 and 4;
    # aapo after 0.6, 0.7, 0.8: 0.700 [0.452, 0.948]; level 1: 0.90, 0.80, 0.85 → 0.850,
    # s = 0.05, half = 4.302653 · 0.05 / √3 = 0.124207
    assert (
        "| aapo | 3 | 0.500 [0.500, 0.500] | 0.700 [0.452, 0.948] | 0.700 [0.600, 0.800] "
        "| +0.200 [-0.048, +0.448] | 0.850 [0.726, 0.974] |" in text
    )
    assert "Problems in the final check: 1000." in text
    # paired to grpo as in test_report_numbers_from_fixtures: +0.033 [-0.254, +0.320]
    assert "| aapo | 3 | +0.033 [-0.254, +0.320] |" in text


def test_per_level_paired_difference_and_tie_fraction(tmp_path, make_run):
    text = _report(tmp_path / "runs", make_run)
    assert "## By difficulty level" in text
    # level 1: aapo - grpo = 0.05, 0, 0.05: mean 0.0333, s = 0.028868, se = 0.016667,
    # half = 4.302653 · 0.016667 = 0.071711 → [-0.038, +0.105]
    # level 5: 0, 0.02, 0: mean 0.00667, s = 0.011547, se = 0.0066667, half = 0.028684
    # → [-0.022, +0.035]
    assert "| aapo | +0.033 [-0.038, +0.105] | +0.007 [-0.022, +0.035] |" in text
    # ties: every step 0.5 overall; level 1 mean 0.25 in every run; level 5 over the steps
    # that drew it: aapo (1 + 0.5) / 2 = 0.75, grpo 1
    assert "| aapo | 0.500 [0.500, 0.500] | 0.250 [0.250, 0.250] | 0.750 [0.750, 0.750] |" in text
    assert "| grpo | 0.500 [0.500, 0.500] | 0.250 [0.250, 0.250] | 1.000 [1.000, 1.000] |" in text
    assert "Levels by grpo's tie fraction, most tied first: 5 (1.00), 1 (0.25)." in text


def test_momentum_mass_share_and_where_loss_variance_says_nothing(tmp_path, make_run):
    text = _report(tmp_path / "runs", make_run)
    # aapo: loss 0.01, 0, 0.01, 0 → variance 3.33e-05; mass share 0.2, 0.3, 0.2, 0.3 → 0.25;
    # tied share 0.5; grpo has no momentum
    assert (
        "| aapo | 3.33e-05 [3.33e-05, 3.33e-05] | 0.500 [0.500, 0.500] | – "
        "| 0.250 [0.250, 0.250] | 0.500 [0.500, 0.500] | – |" in text
    )
    assert "| grpo | 0.00e+00 [0.00e+00, 0.00e+00] | 0.500 [0.500, 0.500] | – | – | – | – |" in text
    assert "−(1/S) Σᵢ Aᵢ, which is 0 at every step" in text
    assert "Here every logged loss of grpo is within 1e-06 of 0" in text
    assert "of aapo" not in text.split("Here every logged loss")[1]
