"""Token truncation for stage 1 of LFD: learn only from the easiest tokens.

LFD: "Learning to Diversify Neural Text Generation via Degenerative Model"
(arXiv 2309.12619). A model updated only on the tokens it already finds most
probable amplifies the degenerate attributes of the data (docs/algorithms.md).

The selection is over the whole batch, so it takes two passes over the source: one
without gradient that computes every token's NLL (and ranks them), and one with
gradient over the kept rows only (with a projection, ``1 + 3R`` matmuls instead of 3).
"""

from fractions import Fraction
from typing import Dict, Optional, Tuple

import torch
from torch import Tensor

from .chunked import (
    ChunkObjective,
    Projection,
    Source,
    accumulator_dtype,
    chunked_loss,
    requires_grad,
    source_dtype,
    source_shape,
)
from .softmax import label_smoothed, softmax_rows


def ratio_fraction(ratio: float) -> Fraction:
    """The ratio as the exact decimal the user typed (0.3 -> 3/10, not 0.299..)."""
    return Fraction(str(float(ratio)))


def num_kept(n, ratio: float):
    """``ceil(ratio * n)`` in exact integer arithmetic (ceil(0.3 * 10) is 3, not 4).

    ``n`` may be a Python int or an integer tensor (then no host sync happens).
    """
    frac = ratio_fraction(ratio)
    return (n * frac.numerator + frac.denominator - 1) // frac.denominator


def keep_mask_lowest(
    values: Tensor, pad_mask: Tensor, ratio: float, num_tokens: Optional[int] = None
) -> Tensor:
    """Boolean mask of the ``ceil(ratio * N)`` smallest non-pad ``values``.

    ``N`` is the number of non-pad entries; pass it as ``num_tokens`` when the host
    already knows it, otherwise it is counted on the device. Ties are broken by
    position (a stable sort), so the choice is deterministic.
    """
    pad = pad_mask.reshape(-1)
    if ratio_fraction(ratio) >= 1:
        return ~pad
    k = num_kept((~pad).sum() if num_tokens is None else num_tokens, ratio)
    return _keep_from_order(_rank_order(values, pad), pad, k)


def _rank_order(values: Tensor, pad: Tensor) -> Tensor:
    """Positions of ``values`` from the smallest, pads last, ties by position. A NaN ranks
    first: such a row is always kept, so a non-finite loss shows instead of vanishing."""
    ranked = values.detach().reshape(-1).float()
    ranked = ranked.masked_fill(ranked.isnan(), -float("inf"))
    return torch.sort(ranked.masked_fill(pad.reshape(-1), float("inf")), stable=True).indices


def _keep_from_order(order: Tensor, pad: Tensor, k) -> Tensor:
    """The mask of the first ``k`` positions of ``order`` that are not pads."""
    rank = torch.empty_like(order)
    rank.scatter_(0, order, torch.arange(order.numel(), device=order.device))
    return (rank < k) & ~pad


def lowest_rows(
    values: Tensor,
    pad_mask: Tensor,
    ratio: float,
    num_tokens: Optional[int] = None,
    max_tokens: Optional[int] = None,
) -> Tuple[Tensor, Optional[Tensor]]:
    """The positions :func:`keep_mask_lowest` keeps, as indices of a size the host knows.

    With ``num_tokens`` (the host's count of non-pad entries) these are exactly the
    kept positions and the mask is None. Otherwise the count is taken on the device
    (no host sync): the indices are the first ``ceil(ratio * max_tokens)`` positions in
    rank order (``max_tokens``, a host upper bound of the count, defaults to every
    entry) and the mask says which of them are kept.
    """
    pad = pad_mask.reshape(-1)
    order = _rank_order(values, pad)
    size = order.numel()
    if num_tokens is not None:
        return order[: min(num_kept(num_tokens, ratio), size)], None
    bound = num_kept(size if max_tokens is None else min(max_tokens, size), ratio)
    k = num_kept((~pad).sum(), ratio)
    return order[: min(bound, size)], torch.arange(min(bound, size), device=order.device) < k


class LabelSmoothedObjective(ChunkObjective):
    """fairseq's label-smoothed NLL of the non-pad rows within ``keep`` (row-aligned
    bool, None for all); every row's NLL is written into ``nll_out`` when given."""

    names = ("loss", "nll")

    def __init__(self, target, epsilon, pad, keep=None, nll_out=None, accuracy=False):
        super().__init__(target, pad, accuracy)
        self.eps, self.keep, self.nll_out = epsilon, keep, nll_out

    def chunk(self, z, t, real, rows, want_grad, out):
        lse, q, nll, real = softmax_rows(z, t, real, want_grad, out, self.normalized)
        if self.nll_out is not None:
            self.nll_out[rows] = nll.view(-1)
        keep = real if self.keep is None else real & self.keep[rows].view(-1, 1)
        loss, grad = label_smoothed(z, t, lse, q, nll, keep, self.eps, want_grad)
        return torch.stack([loss, nll.sum()]), grad


class _KeepLowest(LabelSmoothedObjective):
    """Over logits: every row's NLL and cross-entropy gradient in one pass; then, once all
    rows are seen, the ``ceil(R N)`` lowest are kept and the others' gradient set to 0."""

    def __init__(self, target, ratio, pad, num_tokens, nll_out, accuracy):
        super().__init__(target, 0.0, pad, nll_out=nll_out, accuracy=accuracy)
        self.ratio, self.num_tokens = ratio, num_tokens

    def finish(self, sums, grad):
        """The truncated sum as the loss; the dropped rows' gradient zeroed."""
        pad = ~self.real.view(-1)
        order = _rank_order(self.nll_out, pad)
        k = num_kept(self.real.sum() if self.num_tokens is None else self.num_tokens, self.ratio)
        keep = _keep_from_order(order, pad, k)
        if grad is not None:
            if self.num_tokens is None:
                grad.masked_fill_(~keep.view(-1, 1), 0.0)
            else:  # the dropped rows by index: no pass over the kept ones
                grad.index_fill_(0, order[min(k, len(order)) :], 0.0)
        return torch.cat([self.nll_out.masked_fill(~keep, 0.0).sum().view(1), sums[1:]])


def truncated_nll_loss(
    source: Source,
    target: Tensor,
    ratio: float,
    ignore_index: int = -100,
    num_tokens: Optional[int] = None,
    max_tokens: Optional[int] = None,
    accuracy: bool = False,
    rows: Optional[int] = None,
) -> Dict[str, Tensor]:
    """Sum of the NLL of the ``ceil(ratio * N)`` lowest-NLL non-pad tokens: ``loss``,
    ``nll`` (the NLL of every non-pad token), ``kept`` (an int when ``num_tokens``, the
    host's count of non-pad targets, is given; else a 0-dim tensor counted on the device,
    and ``max_tokens``, a host upper bound of the count, limits the gradient pass).

    With ``ratio`` 1 one pass, and ``nll`` is ``loss`` (with its gradient). Else, over
    logits, one pass computes every row's NLL and gradient, and the dropped rows'
    gradient is zeroed once the rows are ranked; over a :class:`Projection`, a pass
    without gradient ranks the NLLs and the gradient pass (when one is needed) runs over
    the kept rows only (``1 + 3R`` matmuls instead of 3). ``nll`` has no gradient. Dropped
    tokens get exactly zero gradient.
    """
    target = target.reshape(-1)
    pad = target.eq(ignore_index)
    if ratio_fraction(ratio) >= 1:  # every token is kept: no ranking pass
        objective = LabelSmoothedObjective(target, 0.0, ignore_index, accuracy=accuracy)
        out = chunked_loss(source, objective, rows)
        out["nll"] = out["loss"]
        out["kept"] = (~pad).sum() if num_tokens is None else num_tokens
        return out
    n, _ = source_shape(source)
    nll = torch.zeros((n,), dtype=accumulator_dtype(source_dtype(source)), device=target.device)
    if num_tokens is None:
        kept = num_kept((~pad).sum(), ratio)
    else:
        kept = min(num_kept(num_tokens, ratio), num_tokens)
    if not isinstance(source, Projection):  # the logits exist: one pass, then keep the lowest
        objective = _KeepLowest(target, ratio, ignore_index, num_tokens, nll, accuracy)
        return {**chunked_loss(source, objective, rows), "kept": kept}
    with torch.no_grad():
        ranking = LabelSmoothedObjective(target, 0.0, ignore_index, nll_out=nll, accuracy=accuracy)
        first = chunked_loss(source, ranking, rows)
    result = {"nll": first["nll"], "kept": kept}
    if "n_correct" in first:
        result["n_correct"] = first["n_correct"]
    if not requires_grad(source):
        keep = keep_mask_lowest(nll, pad, ratio, num_tokens)
        return {"loss": nll.masked_fill(~keep, 0.0).sum(), **result}
    index, valid = lowest_rows(nll, pad, ratio, num_tokens, max_tokens)
    objective = LabelSmoothedObjective(target[index], 0.0, ignore_index, keep=valid)
    out = chunked_loss(source.select(index), objective, rows)
    return {"loss": out["loss"], **result}
