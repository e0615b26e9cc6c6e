"""error_norm_truncation's loss against an independent computation of ENT-Threshold.

Reference (float64, explicit softmax and an explicit one-hot vector): the error norm
e_t = || q_t - onehot(y_t) ||_2 (torch.linalg.vector_norm of the difference); token t
is kept iff e_t <= threshold; L = sum_{kept t} (1 - eps - eps_i) nll_t + eps_i smooth_t,
eps_i = eps / (V - 1), smooth_t = -sum_v log q_t(v); the gradient of a kept token is
(1 - eps - eps_i)(q_t - onehot) + eps_i (V q_t - 1), that of a dropped one is zero.
"""

import math
from types import SimpleNamespace

import pytest
import torch
from fairseq.criterions.label_smoothed_cross_entropy import label_smoothed_nll_loss

from fairseq_divgen.losses import LogProbs, error_norm_truncated_loss


def _ent(lprobs, *args, **kwargs):
    """``error_norm_truncated_loss`` of log-probabilities, its sums as attributes."""
    return SimpleNamespace(**error_norm_truncated_loss(LogProbs(lprobs), *args, **kwargs))


PAD = 1
V = 10


def _batch(seed=0, n=60, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, V, generator=g, dtype=torch.float64) * scale
    target = torch.randint(2, V, (n,), generator=g)
    target[::7] = PAD
    return logits, target


def _reference(logits, target, threshold, eps):
    q = torch.exp(logits - logits.logsumexp(-1, keepdim=True))
    eps_i = eps / (V - 1)
    loss = nll_sum = 0.0
    kept = set()
    norms = []
    grad = torch.zeros_like(logits)
    for t in range(len(target)):
        y = int(target[t])
        if y == PAD:
            continue
        onehot = torch.zeros(V, dtype=logits.dtype)
        onehot[y] = 1.0
        e = torch.linalg.vector_norm(q[t] - onehot).item()
        norms.append(e)
        nll = -math.log(q[t, y].item())
        nll_sum += nll
        if e <= threshold:
            kept.add(t)
            loss += (1 - eps - eps_i) * nll + eps_i * -torch.log(q[t]).sum().item()
            grad[t] = (1 - eps - eps_i) * (q[t] - onehot) + eps_i * (V * q[t] - 1)
    return loss, nll_sum, kept, norms, grad


@pytest.mark.parametrize("threshold,eps", [(1.0, 0.0), (1.2, 0.1), (0.8, 0.1), (1.35, 0.0)])
def test_loss_and_gradient_match_reference(threshold, eps):
    logits, target = _batch()
    ref_loss, ref_nll, kept, norms, ref_grad = _reference(logits, target, threshold, eps)
    z = logits.clone().requires_grad_(True)
    out = _ent(torch.log_softmax(z, -1), target, threshold, eps, PAD)
    out.loss.backward()
    assert 0 < len(kept) < len(norms)  # the threshold cuts somewhere in this batch
    assert out.loss.item() == pytest.approx(ref_loss, rel=1e-12)
    assert out.nll.item() == pytest.approx(ref_nll, rel=1e-12)  # plain NLL of every token
    assert int(out.kept) == len(kept)
    assert out.norm.item() == pytest.approx(sum(norms), rel=1e-12)
    assert (z.grad - ref_grad).abs().max().item() < 1e-12
    touched = {t for t in range(len(target)) if z.grad[t].abs().max().item() > 0}
    assert touched == kept  # dropped tokens and pads get exactly zero gradient


def test_error_norm_is_the_l2_distance_to_the_one_hot_vector():
    logits, target = _batch(seed=1, n=25, scale=4.0)
    q = torch.softmax(logits, -1)
    direct = torch.linalg.vector_norm(q - torch.nn.functional.one_hot(target, V).double(), dim=-1)
    lprobs = torch.log_softmax(logits, -1)
    for t in range(len(target)):  # one row at a time: the norm sum is that row's norm
        norm = _ent(lprobs[t : t + 1], target[t : t + 1], None).norm
        assert norm.item() == pytest.approx(direct[t].item(), rel=1e-12, abs=1e-12)


def test_norms_are_the_same_in_chunks():
    g = torch.Generator().manual_seed(2)
    lprobs = torch.log_softmax(torch.randn(37, 50, generator=g, dtype=torch.float64), -1)
    target = torch.randint(0, 50, (37,), generator=g)
    q = lprobs.exp()
    direct = (q.pow(2).sum(-1) - 2 * q.gather(-1, target[:, None]).squeeze(-1) + 1).sqrt().sum()
    for rows in (1, 7, 37):  # one row per chunk, 7 rows, everything at once
        out = error_norm_truncated_loss(LogProbs(lprobs), target, None, rows=rows)
        assert out["norm"].item() == pytest.approx(direct.item(), rel=1e-13)


@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_no_threshold_is_fairseq_label_smoothed_cross_entropy(eps):
    logits, target = _batch(seed=3)
    lprobs = torch.log_softmax(logits, -1)
    ours = _ent(lprobs, target, None, eps, PAD)
    ref, ref_nll = label_smoothed_nll_loss(lprobs, target, eps, ignore_index=PAD)
    assert ours.loss.item() == ref.item() and ours.nll.item() == ref_nll.item()
    # with a threshold but truncate=False (warm-up, validation) the loss is the same
    warm = _ent(lprobs, target, 0.9, eps, PAD, truncate=False)
    assert warm.loss.item() == ref.item() and int(warm.kept) < int((target != PAD).sum())


def test_threshold_sqrt2_never_drops_even_a_confident_error():
    # The model is sure of token 2, the gold is 3: e = sqrt(2) up to rounding, in fp32
    logits = torch.zeros(4, V)
    logits[:, 2] = 50.0
    target = torch.tensor([3, 3, 2, 3])
    lprobs = torch.log_softmax(logits, -1)
    assert _ent(lprobs[:1], target[:1], None).norm.item() == pytest.approx(math.sqrt(2), rel=1e-6)
    out = _ent(lprobs, target, math.sqrt(2), 0.0, PAD)
    assert int(out.kept) == 4
    assert int(_ent(lprobs, target, 1.4, 0.0, PAD).kept) == 1
