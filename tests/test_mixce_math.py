"""mixce's loss against an independent computation of MixCE's token-level objective.

Reference (float64, explicit softmax): w_t = eta + (1 - eta) p_t with p_t = q_t(y_t)
a constant, L = sum_t w_t * -log p_t over non-pad t, d L / d z_t = w_t (q_t - onehot(y_t)).
"""

import math

import pytest
import torch
import torch.nn.functional as F

from fairseq_divgen.losses import LogProbs, mixce_loss


def _mixce(lprobs, *args, **kwargs):
    """``(loss, nll, weight sum)`` of ``mixce_loss`` on log-probabilities."""
    out = mixce_loss(LogProbs(lprobs), *args, **kwargs)
    return out["loss"], out["nll"], out["weight"]


PAD = 1
V = 11


def _batch(seed=0, n=40, scale=2.5):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, V, generator=g, dtype=torch.float64) * scale
    target = torch.randint(2, V, (n,), generator=g)
    target[::6] = PAD
    return logits, target


def _reference(logits, target, eta):
    q = torch.exp(logits - logits.logsumexp(-1, keepdim=True))
    loss = nll_sum = weight_sum = 0.0
    grad = torch.zeros_like(logits)
    for t in range(len(target)):
        y = int(target[t])
        if y == PAD:
            continue
        p = q[t, y].item()
        w = eta + (1 - eta) * p
        loss += w * -math.log(p)
        nll_sum += -math.log(p)
        weight_sum += w
        grad[t] = w * q[t]
        grad[t, y] -= w
    return loss, nll_sum, weight_sum, grad


@pytest.mark.parametrize("eta", [0.0, 0.1, 0.5, 0.9])
def test_loss_and_gradient_match_reference(eta):
    logits, target = _batch()
    ref_loss, ref_nll, ref_w, ref_grad = _reference(logits, target, eta)
    z = logits.clone().requires_grad_(True)
    loss, nll, wsum = _mixce(torch.log_softmax(z, -1), target, eta, PAD)
    loss.backward()
    assert loss.item() == pytest.approx(ref_loss, rel=1e-12)
    assert nll.item() == pytest.approx(ref_nll, rel=1e-12)
    assert wsum.item() == pytest.approx(ref_w, rel=1e-12)
    assert (z.grad - ref_grad).abs().max().item() < 1e-12  # the weight is a constant
    assert z.grad[target == PAD].abs().max().item() == 0.0


def test_eta_one_is_fairseq_cross_entropy():
    # Equal up to the order of a float64 sum (the weight is exactly 1; fairseq's
    # F.nll_loss sums sequentially, torch.sum pairwise).
    logits, target = _batch(seed=1)
    z1 = logits.clone().requires_grad_(True)
    z2 = logits.clone().requires_grad_(True)
    loss, nll, _ = _mixce(torch.log_softmax(z1, -1), target, 1.0, PAD)
    # fairseq's cross_entropy criterion: F.nll_loss(lprobs, target, ignore_index, "sum")
    ce = F.nll_loss(torch.log_softmax(z2, -1), target, ignore_index=PAD, reduction="sum")
    assert loss.item() == pytest.approx(ce.item(), rel=1e-14) and nll.item() == pytest.approx(
        ce.item(), rel=1e-14
    )
    loss.backward()
    ce.backward()
    torch.testing.assert_close(z1.grad, z2.grad, rtol=0, atol=1e-14)


def test_eta_zero_weights_each_token_by_its_probability():
    logits, target = _batch(seed=2, scale=1.0)
    lprobs = torch.log_softmax(logits, -1)
    loss, _, wsum = _mixce(lprobs, target, 0.0, PAD)
    gold = lprobs.gather(-1, target[:, None]).squeeze(-1)[target != PAD]
    assert loss.item() == pytest.approx((gold.exp() * -gold).sum().item(), rel=1e-12)
    assert wsum.item() == pytest.approx(gold.exp().sum().item(), rel=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_no_nan_when_gold_probability_underflows(dtype):
    logits = torch.zeros(3, V, dtype=dtype)
    logits[:, 2] = 60.0  # gold is token 3: p -> 0, nll large, weight -> eta
    target = torch.tensor([3, PAD, 3])
    z = logits.clone().requires_grad_(True)
    for lprobs in (torch.log_softmax(z.float(), -1), torch.log_softmax(z, -1)):
        loss, nll, wsum = _mixce(lprobs, target, 0.3, PAD)
        assert torch.isfinite(loss) and torch.isfinite(nll)
        assert wsum.item() == pytest.approx(0.6, rel=1e-3)
        (grad,) = torch.autograd.grad(loss, z)
        assert torch.isfinite(grad).all()
