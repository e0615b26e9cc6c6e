"""Each criterion's loss sums and dL/dlogits for one chunk of rows, in closed form.

These are the callbacks of :func:`fused_output.fused_output_loss`: given the fp32
logits ``z`` of some rows (``q = softmax(z)``, ``nll = -log q(y)``), each returns the
chunk's sums (the same sums the unfused loss functions of this package return) and
``dL/dz`` of the rows, written out instead of differentiated:

- fairseq's label smoothing, ``(1 - eps - eps_i) nll + eps_i sum_v -log q(v)`` with
  ``eps_i = eps / (V - 1)``: ``dL/dz = (1 - eps - eps_i + V eps_i) q - eps_i -
  (1 - eps - eps_i) onehot(y)``; with a detached token weight ``w`` (TaiLr's
  ``(1 - eps) w nll + eps / V sum_v -log q(v)``, MixCE's ``w nll``) the same shape;
- unlikelihood's ``-log(1 - q(c))`` for a candidate ``c``: ``a_c (onehot(c) - q)``
  with ``a_c = q(c) / (1 - q(c)) = 1 / expm1(-log q(c))``;
- LFD's product of experts: ``lfd._chunk``.

Every row-aligned input (targets, candidates, masks) is indexed by the chunk's row
slice, so the rows of a chunk carry their own data.
"""
import math
from typing import Optional, Tuple

import torch
from torch import Tensor

from .fused_output import Projection
from .lfd import _chunk as lfd_chunk
from .tailr import tailr_weights
from .unlikelihood import MIN_ONE_MINUS_P, log1mexp


def softmax_rows(z: Tensor, t: Tensor, pad: int, want_q: bool):
    """``(lse, q or None, nll, real)`` of rows ``z`` with targets ``t`` (r, 1): the
    log-normaliser, the softmax (one pass of exp), the gold NLL (0 at pads) and the
    non-pad mask, all (r, 1) but ``q``."""
    m = z.amax(-1, keepdim=True)
    e = (z - m).exp_()
    s = e.sum(-1, keepdim=True)
    lse = m + s.log()
    real = t.ne(pad)
    nll = (lse - z.gather(-1, t)).masked_fill(~real, 0.0)
    return lse, (e.div_(s) if want_q else None), nll, real


def closed_form_grad(q: Tensor, t: Tensor, scale, gold: Tensor, const=None) -> Tensor:
    """``scale * q - const - gold * onehot(t)`` row by row, in place in ``q`` (scale,
    gold and const per row (r, 1); a row whose three are 0 gets 0)."""
    g = q.mul_(scale)
    if const is not None:
        g.sub_(const)
    return g.scatter_add_(-1, t, -gold)


def smooth_sums(z: Tensor, lse: Tensor) -> Tensor:
    """``sum_v -log q(v) = V lse - sum_v z_v`` per row (r, 1)."""
    return z.size(-1) * lse - z.sum(-1, keepdim=True)


def label_smoothed(z, t, lse, q, nll, keep, eps, want_grad):
    """fairseq's label-smoothed NLL summed over the rows ``keep`` (r, 1), and its dL/dz."""
    vocab = z.size(-1)
    eps_i = eps / (vocab - 1)
    kept_nll = nll.masked_fill(~keep, 0.0).sum()
    loss = kept_nll
    if eps > 0.0:
        smooth = smooth_sums(z, lse).masked_fill_(~keep, 0.0).sum()
        loss = (1.0 - eps - eps_i) * kept_nll + eps_i * smooth
    grad = None
    if want_grad:
        k = keep.to(z.dtype)
        wt = 1.0 - eps - eps_i
        const = k * eps_i if eps > 0.0 else None
        grad = closed_form_grad(q, t, k * (wt + vocab * eps_i), k * wt, const)
    return loss, grad


class ChunkObjective:
    """A criterion's sums and dL/dz for a chunk of rows (the fused path's callback).

    ``names`` are the sums' names, the loss first; with ``accuracy`` a last sum
    ``n_correct`` counts the non-pad rows whose argmax is the target.
    """

    names: Tuple[str, ...] = ("loss",)

    def __init__(self, target: Tensor, pad: int, accuracy: bool = False):
        self.target = target.reshape(-1)
        self.pad = pad
        self.accuracy = accuracy

    @property
    def all_names(self) -> Tuple[str, ...]:
        """The names of every sum returned, ``n_correct`` included."""
        return self.names + (("n_correct",) if self.accuracy else ())

    def __call__(self, z: Tensor, rows: slice, want_grad: bool):
        t = self.target[rows].view(-1, 1)
        correct = None
        if self.accuracy:  # the argmax of the logits, before chunk() may reuse them
            correct = (z.argmax(-1, keepdim=True).eq(t) & t.ne(self.pad)).sum().to(z.dtype)
        sums, grad = self.chunk(z, t, rows, want_grad)
        if correct is not None:
            sums = torch.cat([sums, correct.view(1)])
        return sums, grad

    def chunk(self, z: Tensor, t: Tensor, rows: slice, want_grad: bool):
        """Sums (a vector in ``z``'s dtype, in the order of ``names``) and dL/dz or None."""
        raise NotImplementedError


class LabelSmoothedChunk(ChunkObjective):
    """Label-smoothed NLL of the non-pad rows within ``keep`` (row-aligned bool, None
    for all); writes every row's NLL into ``nll_out`` when given."""

    names = ("loss", "nll")

    def __init__(self, target, eps, pad, keep=None, nll_out=None, accuracy=False):
        super().__init__(target, pad, accuracy)
        self.eps, self.keep, self.nll_out = eps, keep, nll_out

    def chunk(self, z, t, rows, want_grad):
        lse, q, nll, real = softmax_rows(z, t, self.pad, want_grad)
        if self.nll_out is not None:
            self.nll_out[rows] = nll.view(-1)
        keep = real if self.keep is None else real & self.keep[rows].view(-1, 1)
        loss, grad = label_smoothed(z, t, lse, q, nll, keep, self.eps, want_grad)
        return torch.stack([loss, nll.sum()]), grad


class TailrChunk(ChunkObjective):
    """TaiLr: ``(1 - eps) sum w nll + eps / V sum_v -log q(v)``, w detached (tailr.py)."""

    names = ("loss", "nll", "weight")

    def __init__(self, target, gamma, min_weight, eps, pad, accuracy=False):
        super().__init__(target, pad, accuracy)
        self.gamma, self.min_weight, self.eps = gamma, min_weight, eps

    def chunk(self, z, t, rows, want_grad):
        eps, vocab = self.eps, z.size(-1)
        lse, q, nll, real = softmax_rows(z, t, self.pad, want_grad)
        w = tailr_weights(-nll, self.gamma, self.min_weight).to(z.dtype).masked_fill_(~real, 0.0)
        loss = (w * nll).sum()
        if eps > 0.0:
            smooth = smooth_sums(z, lse).masked_fill_(~real, 0.0).sum()
            loss = (1.0 - eps) * loss + (eps / vocab) * smooth
        grad = None
        if want_grad:  # (1 - eps) w (q - onehot) + eps (q - 1 / V)
            r = real.to(z.dtype)
            const = (eps / vocab) * r if eps > 0.0 else None
            grad = closed_form_grad(q, t, (1.0 - eps) * w + eps * r, (1.0 - eps) * w, const)
        return torch.stack([loss, nll.sum(), w.sum()]), grad


class MixceChunk(ChunkObjective):
    """MixCE: ``sum (eta + (1 - eta) p) nll``, the weight detached (mixce.py)."""

    names = ("loss", "nll", "weight")

    def __init__(self, target, eta, pad, accuracy=False):
        super().__init__(target, pad, accuracy)
        self.eta = eta

    def chunk(self, z, t, rows, want_grad):
        lse, q, nll, real = softmax_rows(z, t, self.pad, want_grad)
        w = (self.eta + (1.0 - self.eta) * torch.exp(-nll)).masked_fill_(~real, 0.0)
        grad = closed_form_grad(q, t, w, w) if want_grad else None
        return torch.stack([(w * nll).sum(), nll.sum(), w.sum()]), grad


class ErrorNormChunk(ChunkObjective):
    """Error norm truncation: label-smoothed NLL of the rows with ``||q - onehot(y)||_2 <=
    threshold`` (of every row unless ``truncate``), the norm from the same chunk."""

    names = ("loss", "nll", "kept", "norm")

    def __init__(self, target, threshold, eps, pad, truncate, accuracy=False):
        super().__init__(target, pad, accuracy)
        self.threshold, self.eps, self.truncate = threshold, eps, truncate

    def chunk(self, z, t, rows, want_grad):
        lse, q, nll, real = softmax_rows(z, t, self.pad, True)
        sq = (q * q).sum(-1, keepdim=True)
        norms = (sq - 2.0 * torch.exp(-nll) + 1.0).clamp_(min=0.0, max=2.0).sqrt_()
        norms.masked_fill_(~real, 0.0)
        keep = real if self.threshold is None else real & norms.le(self.threshold)
        used = keep if self.truncate else real
        loss, grad = label_smoothed(z, t, lse, q, nll, used, self.eps, want_grad)
        return torch.stack([loss, nll.sum(), keep.sum().to(z.dtype), norms.sum()]), grad


class SequenceTruncationChunk(ChunkObjective):
    """Loss truncation over chunks of whole sequences: each sequence's mean NLL (into
    ``seq_nll_out``) against ``cutoff``, then the label-smoothed NLL of the kept ones."""

    names = ("loss", "nll", "kept_sequences", "kept_tokens")

    def __init__(self, target, cutoff, eps, pad, truncate, seq_nll_out, accuracy=False):
        super().__init__(target, pad, accuracy)
        self.length = target.size(1)
        self.cutoff, self.eps, self.truncate, self.seq_nll = cutoff, eps, truncate, seq_nll_out

    def chunk(self, z, t, rows, want_grad):
        length = self.length
        lse, q, nll, real = softmax_rows(z, t, self.pad, want_grad)
        tokens = real.view(-1, length).sum(1)
        seq_nll = (nll.view(-1, length).sum(1) / tokens).masked_fill(tokens == 0, math.nan)
        self.seq_nll[rows.start // length : rows.stop // length] = seq_nll
        keep_seq = seq_nll.le(self.cutoff) | (tokens == 0)
        keep = keep_seq.unsqueeze(1).expand(-1, length).reshape(-1, 1) & real
        used = keep if self.truncate else real
        loss, grad = label_smoothed(z, t, lse, q, nll, used, self.eps, want_grad)
        kept_tokens = tokens.masked_fill(~keep_seq, 0).sum()
        sums = [loss, nll.sum(), keep_seq.sum().to(z.dtype), kept_tokens.to(z.dtype)]
        return torch.stack(sums), grad


class UnlikelihoodChunk(ChunkObjective):
    """Token-level unlikelihood: ``nll + alpha sum_c -log(1 - q(c))`` over each row's
    candidates (``cand_tokens`` (N, K) with ``cand_mask``; None: no penalty)."""

    names = ("loss", "nll", "penalty")

    def __init__(self, target, cand_tokens, cand_mask, alpha, pad, min_one_minus_p=MIN_ONE_MINUS_P,
                 accuracy=False):  # fmt: skip
        super().__init__(target, pad, accuracy)
        self.cand_tokens, self.cand_mask, self.alpha = cand_tokens, cand_mask, alpha
        self.bound = math.log1p(-min_one_minus_p)

    def chunk(self, z, t, rows, want_grad):
        lse, q, nll, real = softmax_rows(z, t, self.pad, want_grad)
        r = real.to(z.dtype)
        if self.cand_tokens is None:
            grad = closed_form_grad(q, t, r, r) if want_grad else None
            return torch.stack([nll.sum(), nll.sum(), nll.new_zeros(())]), grad
        cand, mask = self.cand_tokens[rows], self.cand_mask[rows]
        log_q = z.gather(-1, cand) - lse
        x = log_q.clamp(max=self.bound)  # 1 - q >= min_one_minus_p, as unlikelihood.py
        penalty = (-log1mexp(x)).masked_fill(~mask, 0.0).sum()
        loss = nll.sum() + self.alpha * penalty
        grad = None
        if want_grad:
            # q - onehot(y) + alpha (sum_c a_c onehot(c) - q sum_c a_c); a_c = 0 where clamped
            a = torch.where(mask & log_q.le(self.bound), 1.0 / torch.expm1(-x), 0.0)
            grad = closed_form_grad(q, t, r - self.alpha * a.sum(-1, keepdim=True), r)
            grad.scatter_add_(-1, cand, self.alpha * a)
        return torch.stack([loss, nll.sum(), penalty]), grad


class LfdChunk(ChunkObjective):
    """LFD's product of experts (lfd.py), the degenerative model's logits of the same
    rows from a :class:`Projection`, an (N, V) tensor, or None (beta = 0)."""

    names = ("loss", "poe_nll", "main_nll", "main_eos_nll", "degen_nll")

    def __init__(self, target, degenerative, beta, lam, eps, pad, eos, main_eos, accuracy=False):
        super().__init__(target, pad, accuracy)
        self.degenerative = degenerative
        self.args = (beta, lam, eps, pad, eos, main_eos)

    def degen_logits(self, rows: slice) -> Optional[Tensor]:
        """The degenerative model's logits of ``rows`` (no gradient)."""
        d = self.degenerative
        if d is None:
            return None
        return d.logits(rows) if isinstance(d, Projection) else d[rows].detach()

    def chunk(self, z, t, rows, want_grad):
        return lfd_chunk(z, self.degen_logits(rows), t, *self.args, want_grad)
