"""truncated_ce's loss against an independent computation of its definition
(docs/algorithms.md, truncated cross-entropy).

Reference: among non-pad tokens, sort by (nll, position) and keep the first
ceil(R * N) (computed with exact fractions); the loss is the sum of their NLL.
"""

import math
from fractions import Fraction

import pytest
import torch
import torch.nn.functional as F

from fairseq_divgen.losses import LogProbs, truncated_nll_loss


def _truncated(lprobs, *args, **kwargs):
    """``(loss, nll, kept)`` of ``truncated_nll_loss`` on log-probabilities."""
    out = truncated_nll_loss(LogProbs(lprobs), *args, **kwargs)
    return out["loss"], out["nll"], out["kept"]


PAD = 1
V = 11


def _batch(seed=0, n=37):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, V, generator=g, dtype=torch.float64) * 2
    target = torch.randint(2, V, (n,), generator=g)
    target[3::5] = PAD
    return logits, target


def _reference_kept(logits, target, ratio):
    lp = torch.log_softmax(logits, -1)
    items = [(-lp[t, target[t]].item(), t) for t in range(len(target)) if target[t] != PAD]
    k = math.ceil(Fraction(str(ratio)) * len(items))
    kept = sorted(items)[:k]
    return {t for _, t in kept}, sum(v for v, _ in kept), sum(v for v, _ in items)


@pytest.mark.parametrize("ratio", [0.1, 0.3, 0.5, 0.75, 0.99])
@pytest.mark.parametrize("host_count", [True, False])
def test_keeps_exactly_the_lowest_loss_tokens(ratio, host_count):
    logits, target = _batch(seed=int(ratio * 100))
    kept_ref, loss_ref, nll_ref = _reference_kept(logits, target, ratio)
    z = logits.clone().requires_grad_(True)
    n = int((target != PAD).sum()) if host_count else None
    loss, nll, kept = _truncated(torch.log_softmax(z, -1), target, ratio, PAD, n)
    assert int(kept) == len(kept_ref)
    assert loss.item() == pytest.approx(loss_ref, rel=1e-12)
    assert nll.item() == pytest.approx(nll_ref, rel=1e-12)
    loss.backward()
    touched = {t for t in range(len(target)) if z.grad[t].abs().max().item() > 0}
    assert touched == kept_ref  # dropped tokens (and pads) get exactly zero gradient


def test_ceil_is_exact_for_decimal_ratios():
    # 0.3 * 10 is 3.0000000000000004 in floating point; the kept count must be 3.
    logits, target = _batch(n=10)
    target[:] = 2
    _, _, kept = _truncated(torch.log_softmax(logits, -1), target, 0.3, PAD)
    assert int(kept) == 3


def test_ties_are_broken_by_position():
    logits = torch.zeros(6, V, dtype=torch.float64)  # every token has the same NLL
    target = torch.tensor([2, PAD, 3, 4, 5, 6])
    z = logits.clone().requires_grad_(True)
    loss, _, kept = _truncated(torch.log_softmax(z, -1), target, 0.4, PAD)
    loss.backward()
    assert int(kept) == 2
    nonzero = [t for t in range(6) if z.grad[t].abs().sum() > 0]
    assert nonzero == [0, 2]


def test_ratio_one_is_cross_entropy():
    logits, target = _batch(seed=5)
    loss, nll, kept = _truncated(torch.log_softmax(logits, -1), target, 1.0, PAD)
    ce = F.cross_entropy(logits, target, ignore_index=PAD, reduction="sum")
    assert loss.item() == ce.item() == nll.item()
    assert int(kept) == int((target != PAD).sum())


@pytest.mark.parametrize("host_count", [True, False])
def test_a_nan_loss_is_kept_so_that_it_shows(host_count):
    # A row whose logits hold NaN (a forward overflow) must not be ranked out of sight:
    # it is kept, so the loss and its gradient carry the NaN that fairseq's overflow
    # handling reacts to, whichever way the kept count is known.
    logits, target = _batch(seed=5)
    logits[0, 4] = float("nan")
    z = logits.clone().requires_grad_(True)
    n = int((target != PAD).sum()) if host_count else None
    out = truncated_nll_loss(z, target, 0.3, PAD, n)
    assert math.isnan(out["loss"].item())
    out["loss"].backward()
    assert z.grad[0].isnan().any()
