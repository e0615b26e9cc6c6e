"""Closed-form pieces the objectives share: a chunk's softmax, its gold NLL, and the
gradients of (weighted, label-smoothed) cross-entropy with respect to the logits.

With ``q = softmax(z)`` and ``nll = -log q(y)``:

- ``d nll / dz = q - onehot(y)``;
- ``d (sum_v -log q(v)) / dz = V q - 1``;
- a per-row weight ``w`` that is a constant (detached), as TaiLr's and MixCE's, scales
  the row's gradient.

So every objective below has the gradient ``a q - c - b onehot(y)`` row by row, with
per-row coefficients ``a``, ``b`` and ``c``, built in place in the softmax's memory.
"""

from typing import Optional

import torch
from torch import Tensor


def softmax_rows(
    z: Tensor, t: Tensor, real: Tensor, want_q: bool, out: Optional[Tensor] = None, normalized=False
):
    """``(lse, q or None, nll, real)`` of rows ``z`` with targets ``t`` (r, 1) at the
    positions ``real`` (r, 1): the log-normaliser, the softmax (one pass of exp, into
    ``out`` when given), the gold NLL (0 where not real) and ``real``, all (r, 1) but
    ``q``. ``normalized``: ``z`` are log-probabilities, taken as they are (``lse`` = 0,
    ``q = exp(z)``), so that the sums are computed exactly as from log-probabilities
    (fairseq's ``label_smoothed_nll_loss``)."""
    if normalized:
        lse = z.new_zeros((z.size(0), 1))
        q = (torch.exp(z, out=out) if out is not None else z.exp()) if want_q else None
        return lse, q, (-z.gather(-1, t)).masked_fill(~real, 0.0), real
    m = z.amax(-1, keepdim=True)
    e = torch.sub(z, m, out=out) if out is not None else z - m
    e.exp_()
    s = e.sum(-1, keepdim=True)
    lse = m + s.log()
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
    """fairseq's label-smoothed NLL, ``(1 - eps - eps_i) nll + eps_i sum_v -log q(v)`` with
    ``eps_i = eps / (V - 1)``, summed over the rows ``keep`` (r, 1), and its dL/dz
    (``(1 - eps - eps_i + V eps_i) q - eps_i - (1 - eps - eps_i) onehot(y)``, in ``q``)."""
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
