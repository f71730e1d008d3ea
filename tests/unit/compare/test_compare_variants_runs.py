"""Variants by name, and run directories read back as curves."""

import pytest

from aapo.compare.runs import find_runs, group_runs, load_run
from aapo.compare.variants import (
    CompareError,
    get_variant,
    infer_variant,
    parse_variants,
    register_variant,
    variant_names,
)


def test_every_registered_algorithm_is_a_variant_of_itself():
    for name in ("aapo", "grpo", "gpg", "dapo", "dr_grpo"):
        variant = get_variant(name)
        assert (variant.algorithm, dict(variant.overrides)) == (name, {})
    noclip = get_variant("aapo_noclip")
    assert (noclip.algorithm, dict(noclip.overrides)) == ("aapo", {"momentum_clip": False})


def test_unknown_variant_is_named_with_the_known_ones():
    with pytest.raises(CompareError, match=r"'aapo_nocl'.*aapo, aapo_noclip, dapo"):
        parse_variants("aapo,aapo_nocl")
    with pytest.raises(CompareError, match="grpo more than once"):
        parse_variants("grpo,aapo,grpo")
    with pytest.raises(CompareError, match="empty name"):
        parse_variants("aapo,,grpo")
    assert [v.name for v in parse_variants(" aapo , aapo_noclip")] == ["aapo", "aapo_noclip"]


def test_a_variant_may_not_set_what_the_runner_sets():
    with pytest.raises(ValueError, match=r"\['seed'\]"):
        register_variant("aapo_seeded", "aapo", seed=3)
    with pytest.raises(ValueError, match="already registered"):
        register_variant("aapo_noclip", "aapo", momentum_clip=False)
    assert "aapo_seeded" not in variant_names()


def test_a_run_config_is_matched_back_to_its_variant():
    assert infer_variant({"algorithm": "aapo", "momentum_clip": False}) == "aapo_noclip"
    assert infer_variant({"algorithm": "aapo", "momentum_clip": True}) == "aapo"
    assert infer_variant({"algorithm": "grpo", "momentum_clip": False}) == "grpo"


def test_curve_merges_lines_of_one_step_and_skips_nulls(tmp_path, make_run):
    run = load_run(
        make_run(
            tmp_path / "r",
            "grpo",
            1,
            [
                {"step": 0, "eval/accuracy": 0.5},
                {"step": 1, "reward": 0.2, "loss": None},
                {"step": 2, "reward": 0.4, "loss": 0.1},
                {"step": 2, "eval/accuracy": 0.6},  # an eval line beside the training line
            ],
        )
    )
    assert run.curve("reward") == ([1, 2], [0.2, 0.4])
    assert run.curve("loss") == ([2], [0.1])
    assert run.curve("eval/accuracy") == ([0, 2], [0.5, 0.6])
    assert not run.has("ref_reward")
    assert (run.variant, run.seed) == ("grpo", 1)


def test_bad_run_directories_are_named(tmp_path, make_run):
    (tmp_path / "empty").mkdir()
    with pytest.raises(CompareError, match=r"empty has no metrics\.jsonl"):
        find_runs([tmp_path / "empty"])
    with pytest.raises(CompareError, match="is not a directory"):
        find_runs([tmp_path / "absent"])
    bad = make_run(tmp_path / "bad", "aapo", 1, [{"step": 1}])
    (bad / "metrics.jsonl").write_text('{"step": 1}\n{"step": 2, oops\n', encoding="utf-8")
    with pytest.raises(CompareError, match=r"metrics.jsonl:2: not valid JSON"):
        load_run(bad)
    (bad / "metrics.jsonl").write_text('{"reward": 1}\n', encoding="utf-8")
    with pytest.raises(CompareError, match=r"metrics.jsonl:1: expected .* integer 'step'"):
        load_run(bad)
    (bad / "config.yaml").unlink()
    with pytest.raises(CompareError, match=r"has no config\.yaml"):
        load_run(bad)


def test_a_compare_directory_is_searched_and_grouped_by_variant(tmp_path, make_run, records):
    out = tmp_path / "cmp"
    for seed in (2, 1):
        make_run(out / "aapo" / f"seed-{seed}", "aapo", seed, records(3, 0.1, True))
        make_run(
            out / "aapo_noclip" / f"seed-{seed}",
            "aapo",
            seed,
            records(3, 0.1, True),
            momentum_clip=False,
        )
    make_run(out / "aapo" / "seed-1" / "checkpoint-2", "aapo", 9, [])  # not a run
    groups = group_runs(find_runs([out, out / "aapo" / "seed-1"]))  # listed twice: one run
    assert list(groups) == ["aapo", "aapo_noclip"]
    assert [r.seed for r in groups["aapo"]] == [1, 2]


def test_two_runs_of_one_variant_and_seed_are_refused(tmp_path, make_run):
    make_run(tmp_path / "a", "gpg", 1, [{"step": 1}])
    make_run(tmp_path / "b", "gpg", 1, [{"step": 1}])
    with pytest.raises(CompareError, match="both gpg seed 1"):
        find_runs([tmp_path / "a", tmp_path / "b"])
