"""Generation batches that feed several optimizer steps (TRL's μ = num_iterations) and group
selection (DAPO's dynamic sampling), on a toy policy whose log-probs are known in closed form."""

import dataclasses
import math
from types import SimpleNamespace

import pytest
import torch

from aapo.algorithms import Algorithm
from aapo.data.rows import PromptRow
from aapo.rewards.scoring import RewardScorer
from aapo.rollout import Sample
from aapo.training import builders
from aapo.training.config import TrainConfig
from aapo.training.step import StepParts, train_round

V = 6  # vocabulary; token 0 is padding


class Toy(torch.nn.Module):
    """Logits = one learnt bias vector at every position: log π(t) = b_t − logsumexp(b)."""

    def __init__(self) -> None:
        super().__init__()
        self.bias = torch.nn.Parameter(torch.zeros(V))
        self.forwards = 0

    def forward(self, input_ids, attention_mask=None, logits_to_keep=1, **kwargs):
        self.forwards += 1
        return SimpleNamespace(logits=self.bias.expand(input_ids.shape[0], logits_to_keep, V))


class Fixed:
    """Every prompt gets the same G completions: [2, 3] ("good") then [4] ("bad")."""

    def generate(self, prompts, params):
        return [
            [Sample([2, 3], "good", False), Sample([4], "bad", False)][: params.n] for _ in prompts
        ]


def good(prompts, completions, **kwargs):
    return [1.0 if c == "good" else 0.0 for c in completions]


def _config(micro_batch, accumulation=1, **options):
    """The toy's TrainConfig: G = 2, `micro_batch` completions a micro-batch."""
    return TrainConfig(
        num_generations=2,
        per_device_train_batch_size=micro_batch,
        gradient_accumulation_steps=accumulation,
        **options,
    )


def _parts(config, model, sampler, lr=1.0):
    from accelerate import Accelerator

    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    return StepParts(
        config=config,
        model=model,
        policy_sampler=sampler,
        reference=None,
        reference_logprobs=None,
        scorer=RewardScorer(["good"], [good]),
        optimizer=optimizer,
        scheduler=torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0),
        accelerator=Accelerator(cpu=True),
        pad_id=0,
        sync_weights=None,
        sampling=builders.sampling_params(config),
        estimator="grpo",
        loss=builders.loss_settings(config, Algorithm("grpo", "clipped", "token_mean")),
        advantage_options={"scale_rewards": "group"},
    )


def _row(i):
    return PromptRow(i, [1], {"problem": f"p{i}", "answer": "1"}, f"row {i}")


def _expected_bias_after_two_clipped_updates(lr, eps):
    """The same two updates written out independently: per-token surrogate
    −min(ρA, clip(ρ, 1−ε, 1+ε)A), mean over the 3 completion tokens, SGD."""
    a = 0.5 / (0.5**0.5 + 1e-4)  # GRPO advantage of rewards [1, 0]: ±0.5 / (std + eps)
    tokens = torch.tensor([2, 3, 4])
    adv = torch.tensor([a, a, -a])
    bias = torch.zeros(V, requires_grad=True)
    old = (bias[tokens] - torch.logsumexp(bias, 0)).detach()  # the sampling policy
    for _ in range(2):
        logp = bias[tokens] - torch.logsumexp(bias, 0)
        ratio = torch.exp(logp - old)
        surrogate = torch.minimum(ratio * adv, ratio.clamp(1 - eps, 1 + eps) * adv)
        loss = -surrogate.mean()
        (grad,) = torch.autograd.grad(loss, bias)
        bias = (bias - lr * grad).detach().requires_grad_(True)
    return bias.detach()


def test_two_iterations_give_the_hand_computed_clipped_update_with_one_old_forward():
    config = _config(
        2,
        num_iterations=2,
        max_grad_norm=0.0,
        epsilon=0.2,
        epsilon_high=0.2,
    )
    model = Toy()
    steps = [o.metrics for o in train_round(_parts(config, model, Fixed()), [_row(0)], list)]
    assert len(steps) == 2  # μ = 2 passes over one generation batch
    expected = _expected_bias_after_two_clipped_updates(lr=1.0, eps=0.2)
    torch.testing.assert_close(model.bias.detach(), expected, rtol=1e-5, atol=1e-6)
    assert model.forwards == 3  # old log-probs once, then one forward per update
    assert steps[0]["clip_ratio/region_mean"] == 0.0  # ρ = 1 on the first pass
    assert steps[1]["clip_ratio/region_mean"] > 0.0  # the clip acts on the second


def test_one_iteration_needs_no_old_forward():
    config = _config(2)
    model = Toy()
    assert len(list(train_round(_parts(config, model, Fixed()), [_row(0)], list))) == 1
    assert model.forwards == 1


class TiedForOddPrompts:
    """Prompt ids [1, k]: odd k gets a tied group (all bad), even k a mixed one."""

    def generate(self, prompts, params):
        out = []
        for ids in prompts:
            if ids[-1] % 2:
                out.append([Sample([4], "bad", False) for _ in range(params.n)])
            else:
                mixed = [Sample([2, 3], "good", False), Sample([4], "bad", False)]
                out.append([mixed[i % 2] for i in range(params.n)])
        return out


def _stream(start):
    """Rows with prompt ids [1, k], k = start, start + 1, ...: half of them tie."""
    counter = iter(range(start, 10_000))

    def draw():
        return [
            PromptRow(k, [1, k], {"problem": f"p{k}", "answer": "1"}, "")
            for k in [next(counter), next(counter)]
        ]

    return draw


def _grad_after_round(config):
    model = Toy()
    parts = _parts(config, model, TiedForOddPrompts())
    parts.optimizer.step = lambda: None  # keep the gradient to compare it
    parts.optimizer.zero_grad = lambda set_to_none=True: None
    draw = _stream(1)
    metrics = [output.metrics for output in train_round(parts, draw(), draw)]
    return model.bias.grad.clone(), metrics


@pytest.mark.parametrize("split", [(4, 1), (1, 4)])
def test_dynamic_sampling_keeps_only_untied_groups_and_split_invariance(split):
    per_device, accumulation = split
    config = _config(
        per_device,
        accumulation,
        dynamic_sampling=True,
        max_sampling_rounds=4,
    )
    grad, metrics = _grad_after_round(config)
    (step,) = metrics
    assert step["frac_reward_zero_std"] == 0.0  # no tied group in the batch
    assert step["sampling/rounds"] == 2.0  # 1 of 2 prompts untied per draw of 2
    assert step["sampling/dropped_groups"] == 2.0
    reference, _ = _grad_after_round(_config(4, dynamic_sampling=True))
    torch.testing.assert_close(grad, reference)  # 4 micro-batches = 1 micro-batch


def test_sampling_cap_fills_with_tied_groups():
    config = _config(4, dynamic_sampling=True, max_sampling_rounds=1)
    _, (step,) = _grad_after_round(config)
    assert step["sampling/rounds"] == 1.0
    assert step["sampling/tied_groups_kept"] == 1.0  # the batch keeps its size
    assert step["frac_reward_zero_std"] == 0.5


def test_gpg_refills_only_up_to_its_fraction():
    _, (step,) = _grad_after_round(_config(4, min_informative_fraction=0.5))
    assert step["sampling/rounds"] == 1.0  # 1 of 2 groups untied already meets 0.5
    assert step["frac_reward_zero_std"] == 0.5
    _, (step,) = _grad_after_round(_config(4, min_informative_fraction=0.75))
    assert step["sampling/rounds"] == 2.0 and step["frac_reward_zero_std"] == 0.0


def _logged_round(cap):
    config = _config(
        4,
        log_completions=True,
        log_completions_max_rows=cap,
    )
    draw = _stream(1)
    (output,) = list(train_round(_parts(config, Toy(), TiedForOddPrompts()), draw(), draw))
    return output


def test_completion_table_matches_the_step_metrics():
    output = _logged_round(cap=64)
    rows, metrics = output.completions, output.metrics
    assert len(rows) == 4  # 2 prompts × G = 2
    assert sum(r["reward"] for r in rows) / 4 == pytest.approx(metrics["reward"])
    zero = sum(r["advantage"] == 0 for r in rows) / 4
    assert zero == pytest.approx(metrics["advantage/zero_frac"])
    assert [r["prompt"] for r in rows] == ["p1", "p1", "p2", "p2"]
    assert rows[0]["rewards"] == {"good": 0.0} and rows[2]["completion"] == "good"
    assert rows[2]["advantage"] > 0 > rows[3]["advantage"]  # the mixed group of p2
    assert len(_logged_round(cap=3).completions) == 3


class FromAnEngine:
    """`Fixed`'s completions with the log-probs an engine reports for them. The toy policy
    starts uniform (log π_train = log 1/6 for every token), so the importance ratios
    π_train / π_engine are: good [2, 3] → 2 and 1, bad [4] → 0.5."""

    def generate(self, prompts, params):
        good = Sample([2, 3], "good", False, [math.log(1 / 12), math.log(1 / 6)])
        bad = Sample([4], "bad", False, [math.log(1 / 3)])
        return [[good, bad][: params.n] for _ in prompts]


@pytest.mark.parametrize("correction", [True, False])
def test_engine_samples_weight_each_tokens_loss_by_the_truncated_ratio(correction):
    """Hand values, NLL with token mean over the 3 tokens, a = GRPO's ±advantage:
    weights min(ratio, 1.5) = [1.5, 1.0, 0.5] (one of three clipped, mean 1.0), so the loss
    −Σ w·A·log π / 3 = a·ln 6·(1.5 + 1.0 − 0.5) / 3 = 2a·ln 6 / 3; without the correction
    a·ln 6·(1 + 1 − 1) / 3. The gap: (ln 2 + 0 + ln 2) / 3."""
    config = _config(
        2,
        vllm_importance_sampling_correction=correction,
        vllm_importance_sampling_cap=1.5,
    )
    parts = _parts(config, Toy(), FromAnEngine())
    nll = builders.loss_settings(config, Algorithm("grpo", "nll", "token_mean"))
    parts = dataclasses.replace(parts, loss=nll)
    metrics = next(train_round(parts, [_row(0)], list)).metrics
    a = 0.5 / (0.5**0.5 + 1e-4)
    assert metrics["vllm/logprob_gap"] == pytest.approx(2 * math.log(2) / 3, rel=1e-5)
    if correction:
        assert metrics["loss"] == pytest.approx(2 * a * math.log(6) / 3, rel=1e-5)
        assert metrics["vllm/is_weight_mean"] == pytest.approx(1.0, rel=1e-6)
        assert metrics["vllm/is_clipped_frac"] == pytest.approx(1 / 3, rel=1e-6)
    else:
        assert metrics["loss"] == pytest.approx(a * math.log(6) / 3, rel=1e-5)
        assert "vllm/is_weight_mean" not in metrics
