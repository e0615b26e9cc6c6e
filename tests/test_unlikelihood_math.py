"""unlikelihood's loss against an independent computation of the token-level objective.

Reference (float64, explicit softmax, one position at a time): at non-pad position t
of sequence b, the candidates are the distinct tokens of positions s < t of the same
sequence, other than y_t and pad;
L = sum_t [ -log q_t(y_t) + alpha * sum_c -log(max(1 - q_t(c), 1e-5)) ],
d L / d z_t = q_t - onehot(y_t) + alpha * sum_c q_t(c) (onehot(c) - q_t) / (1 - q_t(c))
(zero for a candidate whose 1 - q is clamped).
"""

import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from fairseq_divgen.losses import LogProbs, log1mexp, previous_token_candidates, unlikelihood_loss


def _ul(lprobs, *args, **kwargs):
    """``unlikelihood_loss`` of log-probabilities (B, T, V), its sums as attributes."""
    return SimpleNamespace(**unlikelihood_loss(LogProbs(lprobs), *args, **kwargs))


PAD = 1
V = 9


def _batch(seed=0, batch=3, length=8, scale=2.0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch, length, V, generator=g, dtype=torch.float64) * scale
    target = torch.randint(2, 6, (batch, length), generator=g)  # few symbols: many repeats
    target[1, 6:] = PAD
    target[2, 3:] = PAD
    return logits, target


def _candidates(row, t):
    seen = []
    for s in range(t):
        c = int(row[s])
        if c != PAD and c != int(row[t]) and c not in seen:
            seen.append(c)
    return seen


def _reference(logits, target, alpha):
    q = torch.exp(logits - logits.logsumexp(-1, keepdim=True))
    loss = nll = penalty = 0.0
    count = 0
    grad = torch.zeros_like(logits)
    for b in range(target.size(0)):
        for t in range(target.size(1)):
            y = int(target[b, t])
            if y == PAD:
                continue
            qt = q[b, t]
            nll += -math.log(qt[y].item())
            g = qt.clone()
            g[y] -= 1.0
            for c in _candidates(target[b], t):
                one_minus = 1.0 - qt[c].item()
                penalty += -math.log(max(one_minus, 1e-5))
                count += 1
                if one_minus > 1e-5:
                    e = torch.zeros(V, dtype=logits.dtype)
                    e[c] = 1.0
                    g += alpha * qt[c] * (e - qt) / one_minus
            grad[b, t] = g
    loss = nll + alpha * penalty
    return loss, nll, penalty, count, grad


def _ours(logits, target, alpha):
    z = logits.clone().requires_grad_(True)
    out = _ul(torch.log_softmax(z, -1), target, alpha, PAD)
    out.loss.backward()
    return out, z.grad


@pytest.mark.parametrize("alpha", [0.5, 1.0, 3.0])
def test_loss_and_gradient_match_reference(alpha):
    logits, target = _batch()
    ref_loss, ref_nll, ref_pen, ref_count, ref_grad = _reference(logits, target, alpha)
    out, grad = _ours(logits, target, alpha)
    assert out.loss.item() == pytest.approx(ref_loss, rel=1e-12)
    assert out.nll.item() == pytest.approx(ref_nll, rel=1e-12)
    assert out.penalty.item() == pytest.approx(ref_pen, rel=1e-12)
    assert int(out.candidates) == ref_count > 0
    assert (grad - ref_grad).abs().max().item() < 1e-12
    assert grad[target == PAD].abs().max().item() == 0.0  # pads: no gradient at all


def test_candidates_are_the_distinct_earlier_tokens_without_gold_and_pad():
    target = torch.tensor([[4, 5, 4, 6, 5, 7, PAD, PAD]])
    mask = previous_token_candidates(target, PAD)[0]
    got = [sorted(int(target[0, s]) for s in range(8) if mask[t, s]) for t in range(8)]
    # t=2 (gold 4): only 5; t=4 (gold 5): 4 and 6 once each, never 5 itself; pads: none
    assert got == [[], [4], [5], [4, 5], [4, 6], [4, 5, 6], [], []]
    assert got == [
        sorted(_candidates(target[0], t)) if target[0, t] != PAD else [] for t in range(8)
    ]


def test_candidates_never_cross_from_one_sentence_to_another():
    # Sentence 0 uses only tokens 2..4, sentence 1 only 5..7: no token of sentence 0
    # may be a candidate in sentence 1 (the original criterion flattens the batch and
    # lets them leak).
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(2, 6, V, generator=g, dtype=torch.float64) * 2
    target = torch.tensor([[2, 3, 4, 2, 3, 4], [5, 6, 7, 5, 6, PAD]])
    out, grad = _ours(logits, target, 1.0)
    alone = [_ours(logits[b : b + 1], target[b : b + 1], 1.0) for b in range(2)]
    assert out.loss.item() == pytest.approx(sum(a[0].loss.item() for a in alone), rel=1e-12)
    assert torch.allclose(grad, torch.cat([a[1] for a in alone]), rtol=0, atol=1e-14)
    ref_loss, _, _, ref_count, ref_grad = _reference(logits, target, 1.0)  # per sentence
    assert (
        out.loss.item() == pytest.approx(ref_loss, rel=1e-12) and int(out.candidates) == ref_count
    )
    assert (grad - ref_grad).abs().max().item() < 1e-12
    # and the test can tell: the flattened batch (the original's candidates) differs
    leaky = _ul(torch.log_softmax(logits.view(1, 12, V), -1), target.view(1, 12), 1.0, PAD)
    assert leaky.loss.item() > out.loss.item() + 1e-3


def test_alpha_zero_is_cross_entropy():
    # fairseq's cross_entropy up to the order of a float64 sum (F.nll_loss sums sequentially)
    logits, target = _batch(seed=1)
    z1 = logits.clone().requires_grad_(True)
    z2 = logits.clone().requires_grad_(True)
    out = _ul(torch.log_softmax(z1, -1), target, 0.0, PAD)
    ce = F.nll_loss(
        torch.log_softmax(z2, -1).view(-1, V), target.view(-1), ignore_index=PAD, reduction="sum"
    )
    assert out.loss.item() == pytest.approx(ce.item(), rel=1e-14)
    assert out.nll.item() == pytest.approx(ce.item(), rel=1e-14)
    out.loss.backward()
    ce.backward()
    torch.testing.assert_close(z1.grad, z2.grad, rtol=0, atol=1e-14)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_confident_repeat_is_clamped_like_the_original_and_finite(dtype):
    # The model is sure of token 3 at position 1 while the gold is 2: 3 is a candidate
    # (it is position 0's gold) with q = 1 to float precision, so -log(1 - q) = inf
    # without the authors' clamp 1 - q >= 1e-5.
    logits = torch.zeros(1, 3, V, dtype=dtype)
    logits[0, 1, 3] = 200.0
    target = torch.tensor([[3, 2, 4]])
    z = logits.clone().requires_grad_(True)
    out = _ul(torch.log_softmax(z, -1), target, 1.0, PAD)
    assert torch.log_softmax(logits, -1)[0, 1, 3].item() == 0.0
    assert torch.isfinite(out.loss)
    out.loss.backward()
    assert torch.isfinite(z.grad).all()
    # candidates at t=1: {3} (clamped: -log 1e-5); at t=2: {3, 2} under a uniform q
    expected = -math.log(1e-5) + 2 * -math.log(1 - 1 / V)
    assert out.penalty.item() == pytest.approx(expected, rel=1e-5)


def test_log1mexp_matches_the_formula_at_both_ends():
    x = torch.tensor([-1e-12, -1e-6, -0.1, -math.log(2), -1.0, -30.0, -800.0], dtype=torch.float64)
    expected = [
        math.log(-math.expm1(v)) if v > -0.7 else math.log1p(-math.exp(v)) for v in x.tolist()
    ]
    assert log1mexp(x).tolist() == pytest.approx(expected, rel=1e-12)


class _StubModel:
    """What fairseq's criterion needs from a model: logits, normalized probs, targets."""

    training = True

    def __init__(self, logits):
        self.logits = logits

    def __call__(self, **net_input):
        return (self.logits, None)

    def get_normalized_probs(self, net_output, log_probs):
        return torch.log_softmax(net_output[0], -1)

    def get_targets(self, sample, net_output):
        return sample["target"]


def test_ignored_prefix_is_neither_scored_nor_a_candidate():
    from fairseq_divgen.criterions.unlikelihood import UnlikelihoodCriterion

    task = SimpleNamespace(target_dictionary=SimpleNamespace(pad=lambda: PAD))
    crit = UnlikelihoodCriterion(task, False, rank_alpha=1.0, ignore_prefix_size=1)
    logits, target = _batch(seed=4)
    target[:, 0] = 8  # a language tag: must not become a candidate later on
    target[0, 4] = 8
    sample = {"net_input": {}, "target": target, "ntokens": int((target != PAD).sum())}
    loss, _, log = crit(_StubModel(logits), sample)
    ref_loss, ref_nll, ref_pen, ref_count, _ = _reference(logits[:, 1:], target[:, 1:], 1.0)
    assert loss.item() == pytest.approx(ref_loss, rel=1e-12)
    assert log["nll_loss"].item() == pytest.approx(ref_nll, rel=1e-12)
    assert int(log["ul_candidates"]) == ref_count
