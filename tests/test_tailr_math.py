"""TaiLr loss against an independent computation of docs/algorithms.md (TaiLr).

Reference: w_t = clamp(p_t / (gamma + (1 - gamma) p_t), min_weight, 1) with p_t the
softmax probability of the gold token, and
L = (1 - eps) * sum_t w_t nll_t + (eps / V) * sum_t sum_v -log q_t(v) over non-pad t.
The reference is computed in float64 from an explicit softmax, and its gradient
w.r.t. the logits analytically: (1 - eps) w (q - onehot) + eps (q - 1/V).
"""

import math

import pytest
import torch
import torch.nn.functional as F

from fairseq_divgen.losses import LogProbs, tailr_loss, tailr_weights


def _tailr(lprobs, *args, **kwargs):
    """``(loss, nll, weight sum)`` of ``tailr_loss`` on log-probabilities."""
    out = tailr_loss(LogProbs(lprobs), *args, **kwargs)
    return out["loss"], out["nll"], out["weight"]


PAD = 1
V = 13


def _batch(seed=0, n=40, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, V, generator=g, dtype=torch.float64) * scale
    target = torch.randint(2, V, (n,), generator=g)
    target[::7] = PAD  # some pads
    return logits, target


def _reference(logits, target, gamma, min_weight, eps):
    """Loss, unweighted NLL, weights and d loss / d logits, written from the formulas."""
    q = torch.exp(logits - logits.logsumexp(-1, keepdim=True))
    keep = target != PAD
    loss = 0.0
    nll_sum = 0.0
    grad = torch.zeros_like(logits)
    weights = []
    for t in range(logits.size(0)):
        if not keep[t]:
            continue
        p = q[t, target[t]].item()
        w = p / (gamma + (1 - gamma) * p)
        w = min(max(w, min_weight), 1.0)
        weights.append(w)
        nll = -math.log(p)
        smooth = -torch.log(q[t]).sum().item()
        loss += (1 - eps) * w * nll + eps / V * smooth
        nll_sum += nll
        onehot = torch.zeros(V, dtype=logits.dtype)
        onehot[target[t]] = 1.0
        grad[t] = (1 - eps) * w * (q[t] - onehot) + eps * (q[t] - 1.0 / V)
    return loss, nll_sum, weights, grad


def _ours(logits, target, gamma, min_weight, eps):
    z = logits.clone().requires_grad_(True)
    loss, nll, wsum = _tailr(
        torch.log_softmax(z, -1), target, gamma, min_weight, eps, ignore_index=PAD
    )
    loss.backward()
    return loss.item(), nll.item(), wsum.item(), z.grad


@pytest.mark.parametrize(
    "gamma,min_weight,eps",
    [(0.1, 0.3, 0.1), (0.8, 0.2, 0.1), (1e-7, 0.2, 0.0), (0.5, 0.0, 0.0), (1.0, 0.0, 0.2)],
)
def test_loss_and_gradient_match_reference(gamma, min_weight, eps):
    logits, target = _batch()
    ref_loss, ref_nll, ref_w, ref_grad = _reference(logits, target, gamma, min_weight, eps)
    loss, nll, wsum, grad = _ours(logits, target, gamma, min_weight, eps)
    # float64 logits; the weights are computed in float32 by design (log space).
    assert loss == pytest.approx(ref_loss, rel=1e-6, abs=1e-6)
    assert nll == pytest.approx(ref_nll, rel=1e-12)
    assert wsum == pytest.approx(sum(ref_w), rel=1e-6)
    assert (grad - ref_grad).abs().max().item() < 1e-6
    assert grad[target == PAD].abs().max().item() == 0.0


def test_gamma_zero_with_eps_zero_is_exactly_cross_entropy():
    logits, target = _batch(seed=1)
    lprobs = torch.log_softmax(logits, -1)
    loss, _, _ = _tailr(lprobs, target, 0.0, 0.0, 0.0, ignore_index=PAD)
    ce = F.nll_loss(lprobs, target, ignore_index=PAD, reduction="sum")
    assert loss.item() == ce.item()


def test_gamma_zero_is_label_smoothed_ce_with_eps_over_v_convention():
    # Convention (the authors' code): smoothing mass eps spread as eps / V over the
    # whole vocabulary, which is torch's cross_entropy(label_smoothing=eps). fairseq's
    # label_smoothed_cross_entropy spreads eps / (V - 1) instead.
    logits, target = _batch(seed=2)
    loss, _, _ = _tailr(torch.log_softmax(logits, -1), target, 0.0, 0.0, 0.1, PAD)
    ref = F.cross_entropy(logits, target, ignore_index=PAD, reduction="sum", label_smoothing=0.1)
    assert abs(loss.item() - ref.item()) < 1e-10


def test_gamma_one_weight_is_probability():
    logits, target = _batch(seed=3, scale=1.0)
    lp = torch.log_softmax(logits, -1).gather(-1, target[:, None]).squeeze(-1)
    w = tailr_weights(lp, 1.0, 0.0)
    assert torch.allclose(w.double(), lp.exp(), rtol=1e-6, atol=0)


def test_weights_clamped_at_min_weight():
    lp = torch.log(torch.tensor([1e-9, 1e-3, 0.05, 0.5, 1.0]))
    w = tailr_weights(lp, 0.1, 0.3)
    expected = [max(0.3, min(1.0, p / (0.1 + 0.9 * p))) for p in [1e-9, 1e-3, 0.05, 0.5, 1.0]]
    assert w.tolist() == pytest.approx(expected, rel=1e-6)
    assert w.min().item() == pytest.approx(0.3)


def test_weight_is_constant_for_autograd():
    logits, target = _batch(seed=4)
    z = logits.clone().requires_grad_(True)
    lp = torch.log_softmax(z, -1).gather(-1, target[:, None])
    assert not tailr_weights(lp, 0.1, 0.3).requires_grad


@pytest.mark.parametrize("gamma", [0.0, 1.0, 0.1, 1e-7])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_no_nan_when_gold_probability_underflows(gamma, dtype):
    logits = torch.zeros(4, V, dtype=dtype)
    logits[:, 2] = 60.0 if dtype == torch.float16 else 200.0  # gold is token 3: p -> 0
    target = torch.tensor([3, 3, PAD, 3])
    z = logits.clone().requires_grad_(True)
    # fp16 logits reach the loss as fairseq hands them over: log_softmax upcast to fp32,
    # and also as raw fp16 log-probs.
    for lprobs in (torch.log_softmax(z.float(), -1), torch.log_softmax(z, -1)):
        loss, nll, wsum = _tailr(lprobs, target, gamma, 0.2, 0.1, PAD)
        assert torch.isfinite(loss) and torch.isfinite(nll) and torch.isfinite(wsum)
        (grad,) = torch.autograd.grad(loss, z)
        assert torch.isfinite(grad).all()
    w = tailr_weights(torch.full((3,), -float("inf")), gamma, 0.2)
    assert torch.isfinite(w).all()
    assert w.tolist() == ([1.0] * 3 if gamma == 0.0 else [pytest.approx(0.2)] * 3)


def test_half_log_probs_are_summed_in_fp32():
    # Half-precision log-probabilities (e.g. from a caller that does not upcast like
    # fairseq's get_normalized_probs does): a row's smoothing sum over V = 4096 entries
    # near -30 and the NLL sum over the batch both pass fp16's maximum (65504).
    g = torch.Generator().manual_seed(5)
    n, v = 512, 4096
    logits = torch.randn(n, v, generator=g) * 2.0
    logits[:, 0] = 30.0  # one dominant token: every other log-probability is near -30
    lprobs = torch.log_softmax(logits, -1).half()
    target = torch.randint(2, v, (n,), generator=g)
    lp64 = lprobs.double()  # the same half values, reduced in float64 below
    gold = lp64.gather(-1, target[:, None]).squeeze(-1)
    p = gold.exp()
    for gamma, eps in ((0.1, 0.1), (0.0, 0.0), (1.0, 0.1)):
        w = (p / (gamma + (1 - gamma) * p)).clamp(0.3, 1.0)
        ref_loss = (1 - eps) * (w * -gold).sum() + eps / v * (-lp64.sum())
        loss, nll, wsum = _tailr(lprobs, target, gamma, 0.3, eps, ignore_index=PAD)
        assert torch.isfinite(loss) and torch.isfinite(nll)
        assert loss.item() == pytest.approx(ref_loss.item(), rel=1e-4)
        assert nll.item() == pytest.approx((-gold).sum().item(), rel=1e-4)
        assert wsum.item() == pytest.approx(w.sum().item(), rel=1e-4)
