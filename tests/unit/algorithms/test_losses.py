"""Policy losses, k3 KL and loss aggregation as worked examples, plus micro-batch invariance."""

import math

import pytest
import torch
from torch.testing import assert_close

from aapo.algorithms import (
    aggregate_loss,
    clipped_surrogate_loss,
    get_policy_loss,
    k3_kl,
    truncated_importance_weights,
    weighted_nll_loss,
)

f64 = torch.float64


def t(*rows):
    return torch.tensor(rows, dtype=f64)


# --- weighted NLL (AAPO, GPG: eq. 4) -------------------------------------------------------------


def test_weighted_nll_per_token():
    logps = t([-1.0, -2.0], [-0.5, -3.0])
    # row 0, A = 2: -2·-1 = 2, -2·-2 = 4; row 1, A = -1: 1·-.5 = -.5, 1·-3 = -3
    assert_close(weighted_nll_loss(logps, t(2.0, -1.0)), t([2.0, 4.0], [-0.5, -3.0]))


def test_weighted_nll_accepts_per_token_advantages():
    logps = t([-1.0, -2.0])
    assert_close(weighted_nll_loss(logps, t([1.0, 3.0])), t([1.0, 6.0]))


def test_aapo_loss_gradient_matches_eq6_by_hand():
    # a context-free softmax policy over V = 3 tokens, logits θ = 0 → π = (1/3, 1/3, 1/3)
    theta = torch.zeros(3, dtype=f64, requires_grad=True)
    tokens = torch.tensor([[0, 1], [2, 0]])  # completion 1 is one token long (then padding)
    mask = torch.tensor([[True, True], [True, False]])
    logps = torch.log_softmax(theta, dim=0)[tokens]  # [2, 2]
    loss = aggregate_loss(
        weighted_nll_loss(logps, t(1.0, -0.5)), mask, "token_mean", num_tokens=3, num_sequences=2
    )
    loss.backward()
    # d/dθ log π(o) = onehot(o) - π; grad = -(1/N) Σ_i A_i Σ_t (onehot - π), N = 3
    #   completion 0, A = 1:   e0 + e1 - 2π = (1/3, 1/3, -2/3)
    #   completion 1, A = -.5: -.5 (e2 - π) = (1/6, 1/6, -1/3)
    #   sum (1/2, 1/2, -1) · -(1/3) = (-1/6, -1/6, 1/3)
    assert_close(theta.grad, t(-1 / 6, -1 / 6, 1 / 3))


def test_aapo_loss_gradient_matches_eq6_random():
    gen = torch.Generator().manual_seed(0)
    theta = torch.randn(5, dtype=f64, generator=gen, requires_grad=True)
    tokens = torch.randint(0, 5, (4, 6), generator=gen)
    mask = torch.arange(6) < torch.tensor([6, 3, 0, 1])[:, None]
    advantages = torch.randn(4, dtype=f64, generator=gen)
    logps = torch.log_softmax(theta, dim=0)[tokens]
    n = int(mask.sum())
    aggregate_loss(
        weighted_nll_loss(logps, advantages), mask, "token_mean", num_tokens=n, num_sequences=4
    ).backward()
    pi = torch.softmax(theta.detach(), dim=0)
    score = torch.nn.functional.one_hot(tokens, 5).to(f64) - pi  # [n, T, V]
    expected = -(advantages[:, None, None] * score * mask[..., None]).sum(dim=(0, 1)) / n
    assert_close(theta.grad, expected, rtol=1e-12, atol=1e-12)


# --- clipped surrogate ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ratio", "adv", "eps_high", "value", "grad", "low", "high"),
    [
        # ρ = 1: -ρA = -2, d/dlogp (-ρA) = -ρA = -2
        (1.0, 2.0, None, -2.0, -2.0, False, False),
        # A > 0, ρ above 1.2: -min(1.5, 1.2) = -1.2, clipped → no gradient
        (1.5, 1.0, None, -1.2, 0.0, False, True),
        # A > 0, ρ below .8: min(.5, .8) = .5 keeps the unclipped side, gradient -ρA = -.5
        (0.5, 1.0, None, -0.5, -0.5, False, False),
        # A < 0, ρ below .8: min(-.5, -.8) = -.8 is the clipped side → .8, no gradient
        (0.5, -1.0, None, 0.8, 0.0, True, False),
        # A < 0, ρ above 1.2: min(-1.5, -1.2) = -1.5 unclipped → 1.5, gradient -ρA = 1.5
        (1.5, -1.0, None, 1.5, 1.5, False, False),
        # asymmetry: ρ = 1.25 is inside (.8, 1.28) with ε_high = .28 ...
        (1.25, 1.0, 0.28, -1.25, -1.25, False, False),
        # ... but clipped at 1.2 when ε_high defaults to ε_low
        (1.25, 1.0, None, -1.2, 0.0, False, True),
        (1.3, 1.0, 0.28, -1.28, 0.0, False, True),
        # the lower bound stays 1 - ε_low = .8
        (0.75, -1.0, 0.28, 0.8, 0.0, True, False),
    ],
)
def test_clipped_surrogate_by_hand(ratio, adv, eps_high, value, grad, low, high):
    old = t([-1.0])
    logps = (old + math.log(ratio)).requires_grad_()
    per_token, flags = clipped_surrogate_loss(logps, old, t(adv), 0.2, eps_high)
    per_token.sum().backward()
    assert_close(per_token, t([value]))
    assert_close(logps.grad, t([grad]))
    assert flags["low_clipped"].tolist() == [[low]]
    assert flags["high_clipped"].tolist() == [[high]]
    assert flags["region_clipped"].tolist() == [[low or high]]


def test_clipped_at_ratio_one_has_the_policy_gradient():
    # ρ = 1 everywhere: gradient w.r.t. logp equals -A, as for the weighted NLL
    logps = t([-1.0, -2.0, -0.5], [-3.0, -0.1, -1.0]).requires_grad_()
    advantages = t(1.5, -0.5)
    per_token, _ = clipped_surrogate_loss(logps, logps.detach(), advantages)
    per_token.sum().backward()
    assert_close(logps.grad, -advantages[:, None].expand(2, 3))


def test_uniform_policy_loss_call():
    logps = t([-1.0, -2.0])
    per_token, flags = get_policy_loss("nll")(
        logps, advantages=t(1.0), old_logps=None, epsilon_low=0.2, epsilon_high=None
    )
    assert_close(per_token, t([1.0, 2.0]))
    assert flags == {}
    # no old_logps: one update per batch, so ρ = 1 and the loss is -A
    per_token, flags = get_policy_loss("clipped")(
        logps, advantages=t(1.0), old_logps=None, epsilon_low=0.2, epsilon_high=0.28
    )
    assert_close(per_token, t([-1.0, -1.0]))
    assert set(flags) == {"low_clipped", "high_clipped", "region_clipped"}


# --- k3 KL ---------------------------------------------------------------------------------------


def test_k3_kl_values():
    logps = t([math.log(0.5), -1.0, -2.0])
    ref = t([math.log(0.25), -1.0, -1.0])
    # ref - logp = log .5: .5 - log .5 - 1 = log 2 - .5;  equal: 1 - 0 - 1 = 0;  1: e - 1 - 1
    assert_close(k3_kl(logps, ref), t([math.log(2) - 0.5, 0.0, math.e - 2]))


def test_k3_kl_is_positive_off_the_diagonal():
    gen = torch.Generator().manual_seed(1)
    logps, ref = torch.randn(2, 3, 50, generator=gen, dtype=f64)
    kl = k3_kl(logps, ref)
    assert (kl > 0).all()
    assert torch.equal(k3_kl(logps, logps), torch.zeros_like(logps))


# --- aggregation ---------------------------------------------------------------------------------

PER_TOKEN = t([1.0, 2.0, 3.0], [4.0, 5.0, 0.0])
MASK = torch.tensor([[True, True, True], [True, False, False]])  # lengths 3 and 1, Σ = 10


@pytest.mark.parametrize(
    ("mode", "counts", "expected"),
    [
        ("token_mean", {"num_tokens": 4, "num_sequences": 2}, 10 / 4),
        # the whole optimizer batch has 8 tokens: this micro-batch's share is 10 / 8
        ("token_mean", {"num_tokens": 8, "num_sequences": 4}, 10 / 8),
        # sequence means 6 / 3 = 2 and 4 / 1 = 4
        ("sequence_mean", {"num_tokens": 4, "num_sequences": 2}, (2 + 4) / 2),
        ("sequence_mean", {"num_tokens": 4, "num_sequences": 4}, (2 + 4) / 4),
        # 10 / (max length 5 · 2 sequences)
        ("constant", {"num_tokens": 4, "num_sequences": 2, "max_completion_length": 5}, 1.0),
    ],
)
def test_aggregate_by_hand(mode, counts, expected):
    assert_close(aggregate_loss(PER_TOKEN, MASK, mode, **counts), torch.tensor(expected, dtype=f64))


def test_aggregate_accepts_tensor_counts_and_numeric_masks():
    loss = aggregate_loss(
        PER_TOKEN, MASK.long(), "token_mean", num_tokens=torch.tensor(8.0), num_sequences=4
    )
    assert_close(loss, torch.tensor(10 / 8, dtype=f64))


@pytest.mark.parametrize("mode", ["token_mean", "sequence_mean", "constant"])
def test_empty_completions_and_padding_do_not_make_nan(mode):
    # a zero-length completion, and -inf log-probs under the padding
    per_token = t([1.0, float("inf")], [float("nan"), float("-inf")])
    mask = torch.tensor([[True, False], [False, False]])
    loss = aggregate_loss(
        per_token, mask, mode, num_tokens=1, num_sequences=2, max_completion_length=1
    )
    assert torch.isfinite(loss)
    empty = aggregate_loss(
        per_token[1:], mask[1:], mode, num_tokens=0, num_sequences=1, max_completion_length=1
    )
    assert empty.item() == 0.0


# --- micro-batch invariance ----------------------------------------------------------------------

LENGTHS = [1, 5, 3, 0, 7, 2, 4, 6]  # variable, one empty, so the normaliser matters
D, V, T_MAX = 4, 6, max(LENGTHS)


def _batch():
    gen = torch.Generator().manual_seed(0)
    return {
        "features": torch.randn(len(LENGTHS), T_MAX, D, generator=gen, dtype=f64),
        "tokens": torch.randint(0, V, (len(LENGTHS), T_MAX), generator=gen),
        "advantages": torch.randn(len(LENGTHS), generator=gen, dtype=f64),
        "weight": torch.randn(D, V, generator=gen, dtype=f64),
        "old_weight": torch.randn(D, V, generator=gen, dtype=f64) * 0.3,
    }


def _logps(weight, features, tokens):
    """A tiny linear policy: logits = features @ weight."""
    logits = features @ weight  # [n, T, V]
    return torch.log_softmax(logits, dim=-1).gather(-1, tokens[..., None]).squeeze(-1)


def _one_step(mode, loss_name, chunks, per_chunk_normaliser=False):
    """One SGD step over the batch split into `chunks`; returns the updated weight."""
    batch = _batch()
    weight = batch["weight"].clone().requires_grad_()
    lengths = torch.tensor(LENGTHS)
    loss_fn = get_policy_loss(loss_name)
    for chunk in chunks:
        width = max(1, int(lengths[chunk].max()))  # each micro-batch padded to its own width
        features, tokens = batch["features"][chunk, :width], batch["tokens"][chunk, :width]
        mask = torch.arange(width) < lengths[chunk][:, None]  # [n, T]
        logps = _logps(weight, features, tokens)
        old_logps = _logps(batch["old_weight"], features, tokens)
        per_token, _ = loss_fn(
            logps,
            advantages=batch["advantages"][chunk],
            old_logps=old_logps,
            epsilon_low=0.2,
            epsilon_high=0.28,
        )
        scope = lengths[chunk] if per_chunk_normaliser else lengths
        loss = aggregate_loss(
            per_token,
            mask,
            mode,
            num_tokens=int(scope.sum()),
            num_sequences=len(scope),
            max_completion_length=T_MAX,
        )
        loss.backward()
    torch.optim.SGD([weight], lr=0.5).step()
    return weight.detach()


WHOLE = [list(range(8))]
FOUR = [[0, 1], [2, 3], [4, 5], [6, 7]]


@pytest.mark.parametrize("loss_name", ["nll", "clipped"])
@pytest.mark.parametrize("mode", ["token_mean", "sequence_mean", "constant"])
def test_step_is_the_same_with_1_or_4_micro_batches(mode, loss_name):
    one = _one_step(mode, loss_name, WHOLE)
    four = _one_step(mode, loss_name, FOUR)
    assert not torch.equal(one, _batch()["weight"])  # the step moved the weights
    assert_close(four, one, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("mode", ["token_mean", "sequence_mean"])
def test_per_micro_batch_normaliser_would_differ(mode):
    # the test above has power: normalising per micro-batch (known trap 4) changes the step
    one = _one_step(mode, "nll", WHOLE)
    wrong = _one_step(mode, "nll", FOUR, per_chunk_normaliser=True)
    assert not torch.allclose(wrong, one, rtol=1e-6, atol=1e-9)


def test_full_batch_token_mean_is_sum_over_all_tokens():
    batch = _batch()
    mask = torch.arange(T_MAX) < torch.tensor(LENGTHS)[:, None]
    per_token = weighted_nll_loss(
        _logps(batch["weight"], batch["features"], batch["tokens"]), batch["advantages"]
    )
    loss = aggregate_loss(per_token, mask, "token_mean", num_tokens=sum(LENGTHS), num_sequences=8)
    assert_close(loss, per_token[mask].sum() / 28)


# --- bad input -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: aggregate_loss(PER_TOKEN, MASK, "mean", num_tokens=4, num_sequences=2), "mode"),
        (
            lambda: aggregate_loss(PER_TOKEN, MASK, "constant", num_tokens=4, num_sequences=2),
            "max_completion_length",
        ),
        (
            lambda: aggregate_loss(
                PER_TOKEN, MASK[:, :2], "token_mean", num_tokens=4, num_sequences=2
            ),
            "shapes must match",
        ),
        (
            lambda: aggregate_loss(PER_TOKEN, MASK, "token_mean", num_tokens=4, num_sequences=0),
            "num_sequences",
        ),
        (
            lambda: aggregate_loss(PER_TOKEN, MASK, "token_mean", num_tokens=-1, num_sequences=2),
            "num_tokens",
        ),
        (
            lambda: aggregate_loss(
                t(1.0), torch.tensor([True]), "token_mean", num_tokens=1, num_sequences=1
            ),
            r"\[n, T\]",
        ),
        (lambda: weighted_nll_loss(PER_TOKEN, t(1.0, 2.0, 3.0)), "advantages must be"),
        (
            lambda: clipped_surrogate_loss(PER_TOKEN, PER_TOKEN[:, :2], t(1.0, 2.0)),
            "shapes must match",
        ),
        (lambda: clipped_surrogate_loss(PER_TOKEN, PER_TOKEN, t(1.0, 2.0), -0.1), "epsilon_low"),
        (
            lambda: clipped_surrogate_loss(PER_TOKEN, PER_TOKEN, t(1.0, 2.0), 0.2, -0.1),
            "epsilon_high",
        ),
        (lambda: k3_kl(PER_TOKEN, PER_TOKEN[:1]), "shapes must match"),
    ],
)
def test_bad_input_raises(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_truncated_importance_weights_by_hand():
    # π_train / π_engine: 0.5 / 0.25 = 2 → capped at 1.5; 0.2 / 0.4 = 0.5 → kept
    train = torch.tensor([[math.log(0.5), math.log(0.2)]])
    engine = torch.tensor([[math.log(0.25), math.log(0.4)]], requires_grad=True)
    weights, clipped = truncated_importance_weights(train, engine, cap=1.5)
    assert_close(weights, torch.tensor([[1.5, 0.5]]))
    assert clipped.tolist() == [[True, False]]
    assert not weights.requires_grad  # a weight, never a path for the gradient
    with pytest.raises(ValueError, match="cap must be >= 1"):
        truncated_importance_weights(train, engine, cap=0.5)
