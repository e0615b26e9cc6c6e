"""loss_truncation's loss and loss history against independent computations.

Loss reference (float64, explicit softmax, one sequence at a time): a sequence is
kept iff the mean NLL of its non-pad tokens is at most the cutoff; L = sum over the
kept sequences' tokens of (1 - eps - eps_i) nll + eps_i smooth (fairseq's label
smoothing, eps_i = eps / (V - 1)); dropped sequences get exactly zero gradient.

History reference (plain Python and numpy): the losses of an update enter a deque of
the last ``recompute`` values when the next update begins; the cutoff is +inf until
``min_count`` values have entered, then numpy.percentile(deque, 100 (1 - dropc)),
recomputed once ``recompute`` new values have entered since the last time.
"""

import collections
import math
import random
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from fairseq.criterions.label_smoothed_cross_entropy import label_smoothed_nll_loss

from fairseq_divgen.losses import (
    LogProbs,
    LossHistory,
    linear_quantile,
    loss_truncation_loss,
    mark_used,
)


def _lt(lprobs, *args, **kwargs):
    """``loss_truncation_loss`` of log-probabilities, its sums as attributes."""
    return SimpleNamespace(**loss_truncation_loss(LogProbs(lprobs), *args, **kwargs))


PAD = 1
V = 9


def _batch(seed=0, batch=6, length=7, scale=2.5):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch * length, V, generator=g, dtype=torch.float64) * scale
    target = torch.randint(2, V, (batch, length), generator=g)
    target[1, 4:] = PAD
    target[3, 2:] = PAD
    return logits, target


def _reference(logits, target, cutoff, eps):
    q = torch.exp(logits - logits.logsumexp(-1, keepdim=True)).view(*target.shape, V)
    eps_i = eps / (V - 1)
    loss = nll_all = 0.0
    kept, seq_losses = [], []
    grad = torch.zeros_like(q)
    for b in range(target.size(0)):
        toks = [t for t in range(target.size(1)) if target[b, t] != PAD]
        nlls = [-math.log(q[b, t, target[b, t]].item()) for t in toks]
        nll_all += sum(nlls)
        seq_losses.append(sum(nlls) / len(nlls))
        if seq_losses[-1] <= cutoff:
            kept.append(b)
            for t, nll in zip(toks, nlls):
                onehot = torch.zeros(V, dtype=q.dtype)
                onehot[target[b, t]] = 1.0
                loss += (1 - eps - eps_i) * nll + eps_i * -torch.log(q[b, t]).sum().item()
                grad[b, t] = (1 - eps - eps_i) * (q[b, t] - onehot) + eps_i * (V * q[b, t] - 1)
    return loss, nll_all, seq_losses, kept, grad.view(-1, V)


@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_loss_and_gradient_match_reference(eps):
    logits, target = _batch()
    seq = sorted(_reference(logits, target, math.inf, 0.0)[2])
    cutoff = (seq[3] + seq[4]) / 2  # keeps 4 of 6 sequences
    ref_loss, ref_nll, ref_seq, kept, ref_grad = _reference(logits, target, cutoff, eps)
    z = logits.clone().requires_grad_(True)
    out = _lt(torch.log_softmax(z, -1), target, cutoff, eps, PAD)
    out.loss.backward()
    assert len(kept) == 4 and int(out.kept_sequences) == 4
    assert int(out.kept_tokens) == sum(int((target[b] != PAD).sum()) for b in kept)
    assert out.loss.item() == pytest.approx(ref_loss, rel=1e-12)
    assert out.nll.item() == pytest.approx(ref_nll, rel=1e-12)
    assert out.sequence_nll.tolist() == pytest.approx(ref_seq, rel=1e-12)
    assert (z.grad - ref_grad).abs().max().item() < 1e-12  # dropped sequences: exactly zero


@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_infinite_cutoff_is_fairseq_label_smoothed_cross_entropy(eps):
    logits, target = _batch(seed=1)
    lprobs = torch.log_softmax(logits, -1)
    out = _lt(lprobs, target, math.inf, eps, PAD)
    ref, ref_nll = label_smoothed_nll_loss(lprobs, target.view(-1), eps, ignore_index=PAD)
    assert out.loss.item() == ref.item() and out.nll.item() == ref_nll.item()
    # truncate=False (validation): the untruncated objective whatever the cutoff
    val = _lt(lprobs, target, 0.0, eps, PAD, truncate=False)
    assert val.loss.item() == ref.item() and int(val.kept_sequences) == 0


def test_a_sequence_without_target_tokens_is_not_ranked():
    logits, target = _batch(seed=2)
    target[2] = PAD
    out = _lt(torch.log_softmax(logits, -1), target, 1.0, 0.0, PAD)
    assert (
        math.isnan(out.sequence_nll[2].item())
        and not torch.isnan(out.sequence_nll[[0, 1, 3]]).any()
    )


@pytest.mark.parametrize("q", [0.0, 0.35, 0.6, 0.9, 1.0])
def test_linear_quantile_is_numpys_percentile(q):
    g = torch.Generator().manual_seed(3)
    values = torch.randn(50, generator=g)
    for n in (1, 2, 7, 50):
        got = linear_quantile(values, torch.tensor(n), q).item()
        assert got == pytest.approx(
            np.percentile(values[:n].double().numpy(), 100 * q), rel=1e-12, abs=1e-12
        )


class ReferenceHistory:
    """loss_dropper's semantics per update, written with a deque and numpy."""

    def __init__(self, dropc, min_count, recompute):
        self.dropc, self.min_count, self.cap = dropc, min_count, recompute
        self.buf = collections.deque(maxlen=recompute)
        self.total = self.since = 0
        self.cutoff = math.inf
        self.step, self.pending = None, []

    def begin(self, step):
        if step != self.step:
            if self.pending:
                self.buf.extend(self.pending)
                self.total += len(self.pending)
                self.since += len(self.pending)
                self.pending = []
                if (
                    self.dropc > 0
                    and self.total >= max(self.min_count, 1)
                    and (self.since >= self.cap or self.cutoff == math.inf)
                ):
                    values = np.array(self.buf, dtype=np.float32).astype(np.float64)
                    self.cutoff = float(np.percentile(values, 100 * (1 - self.dropc)))
                    self.since = 0
            self.step = step

    def add(self, values):
        self.pending += [v for v in np.float32(values).tolist() if not math.isnan(v)]


def _drive(histories, steps=40, seed=0):
    rng = random.Random(seed)
    cutoffs = []
    for step in range(steps):
        for h in histories:
            h.begin(step)
        cutoffs.append([float(h.cutoff) for h in histories])
        for _ in range(rng.randint(0, 3)):  # micro-batches of this update
            n = rng.choice([1, 5, 12, 40])  # 40 > recompute: one commit overflows the buffer
            values = [rng.expovariate(0.5) for _ in range(n)] + [math.nan] * rng.randint(0, 3)
            for h in histories:
                h.add(torch.tensor(values) if isinstance(h, LossHistory) else values)
    return cutoffs


@pytest.mark.parametrize(
    "dropc,min_count,recompute", [(0.4, 30, 25), (0.1, 0, 10), (0.7, 100, 64), (0.0, 5, 10)]
)
def test_history_follows_the_reference(dropc, min_count, recompute):
    ours, ref = (
        LossHistory(dropc, min_count, recompute),
        ReferenceHistory(dropc, min_count, recompute),
    )
    cutoffs = _drive([ours, ref])
    for got, expected in cutoffs:
        assert got == pytest.approx(expected, rel=1e-12)
    finite = [c for _, c in cutoffs if math.isfinite(c)]
    if dropc == 0.0:
        assert not finite  # dropc = 0 never truncates
    else:
        assert len(set(finite)) > 2  # the cutoff was computed and recomputed
    kept = ours.values[: min(int(ours.total), recompute)]
    assert sorted(kept.tolist()) == pytest.approx(sorted(ref.buf), rel=1e-7)


def test_an_update_never_sees_its_own_losses():
    h = LossHistory(0.5, 1, 100)
    h.begin(0)
    h.add(torch.tensor([1.0, 2.0, 3.0]))
    assert math.isinf(float(h.cutoff))  # same update: nothing committed yet
    h.begin(0)  # another micro-batch of update 0
    assert math.isinf(float(h.cutoff))
    h.begin(1)
    assert float(h.cutoff) == 2.0


class _OutOfMemoryInBackward(torch.autograd.Function):
    """Identity whose backward fails as an out-of-memory error deeper in a real backward would."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        raise RuntimeError("CUDA out of memory (simulated)")


def test_only_batches_whose_backward_completed_enter_the_history():
    # fairseq multiplies a dummy batch's loss by 0 (ignore_grad) before its backward, and
    # abandons a batch whose backward runs out of memory; neither may enter the history.
    history = LossHistory(0.5, 1, 100)
    weights = torch.ones(3, requires_grad=True)

    def batch(values, how):
        inner = weights.sum() if how != "oom" else _OutOfMemoryInBackward.apply(weights).sum()
        loss, used = mark_used(inner)
        history.add(torch.tensor(values), used)
        if how == "used":
            loss.backward()
        elif how == "dummy":
            loss *= 0  # what fairseq's task.train_step does with ignore_grad
            loss.backward()
        elif how == "oom":
            with pytest.raises(RuntimeError, match="out of memory"):
                loss.backward()

    history.begin(0)
    batch([1.0, 2.0, 3.0], "used")
    batch([100.0, 100.0], "dummy")
    batch([200.0], "oom")
    batch([300.0], "forward only")
    history.begin(1)
    assert int(history.total) == 3 and float(history.cutoff) == 2.0  # the median of 1, 2, 3
    batch([4.0], "used")
    history.begin(2)
    assert int(history.total) == 4
