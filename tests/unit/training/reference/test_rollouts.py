"""The reference is the initial policy and never moves: one test, against the `Reference`
protocol, for every way a run can get its reference rollouts."""

import math

import pytest
import torch

from aapo.training.config import TrainConfig
from aapo.training.reference import CachedReference, SampledReference
from aapo.training.reference.build import build_reference_cache
from aapo.training.reference.frozen import AdapterDisabledSampler
from aapo.training.trainer import Trainer

SMALL = {
    "num_generations": 4,
    "per_device_train_batch_size": 16,
    "gradient_accumulation_steps": 1,
    "max_completion_length": 48,
    "dataset_size": 16,
    "learning_rate": 5e-2,  # large: three steps move the policy's samples
    "max_steps": 3,
    "report_to": [],
}
SOURCES = {  # what each implementation is built from, as a run asks for it
    "frozen copy": ({}, SampledReference),
    "LoRA base": ({"use_peft": True, "lora_r": 4, "lora_alpha": 64}, SampledReference),
    "cache": ({"reference_cache": "ref", "reference_draws": 1}, CachedReference),
}


def _config(tmp_path, extra) -> TrainConfig:
    extra = dict(extra)
    if "reference_cache" in extra:
        extra["reference_cache"] = str(tmp_path / extra["reference_cache"])
    return TrainConfig(**SMALL, **extra, output_dir=str(tmp_path / "run"))


def _seeded(side, rows, params):
    torch.manual_seed(1234)
    return side(rows, params)


def _same(a, b) -> bool:
    """Scored equality: rewards, per-function scores (NaN = NaN) and, where kept, token ids."""
    ids = [[s.completion_ids for s in x.samples] if x.samples is not None else None for x in (a, b)]
    return (
        torch.equal(a.rewards, b.rewards)
        and torch.equal(a.valid, b.valid)
        and torch.equal(a.per_function.nan_to_num(math.pi), b.per_function.nan_to_num(math.pi))
        and ids[0] == ids[1]
    )


@pytest.mark.parametrize("source", list(SOURCES))
def test_reference_rollouts_are_the_initial_policys_and_never_move(tmp_path, source):
    if source == "LoRA base":
        pytest.importorskip("peft")
    extra, kind = SOURCES[source]
    config = _config(tmp_path, extra)
    if config.reference_cache:
        build_reference_cache(config, process_index=0, num_processes=1)
    trainer = Trainer(config)
    reference, params = trainer.parts.reference, trainer.parts.sampling
    assert isinstance(reference, kind)
    rows = trainer.rows[:2]

    def ref(rows, params):
        return reference.rollouts(rows, params, {})

    def policy(rows, params):
        from aapo.rollout import flatten
        from aapo.training.scored import score

        groups = trainer.policy_sampler.generate([r.prompt_ids for r in rows], params)
        return score(trainer.parts.scorer, rows, flatten(groups), params.n)

    before = _seeded(ref, rows, params)
    policy_before = _seeded(policy, rows, params)
    if isinstance(reference, SampledReference):  # the same weights, seed and sampler
        assert _same(before, policy_before)
        if source == "LoRA base":
            assert isinstance(reference.sampler, AdapterDisabledSampler)
        else:
            assert reference.sampler.model is not trainer.policy_sampler.model
    trainer.train()
    try:
        assert not _same(_seeded(policy, rows, params), policy_before)  # the policy moved
        assert _same(_seeded(ref, rows, params), before)  # its reference did not
    finally:
        trainer.parts.scorer.close()
