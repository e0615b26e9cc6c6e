"""Loss truncation for stage 1 of LFD: learn only from the easiest tokens.

LFD: "Learning to Diversify Neural Text Generation via Degenerative Model"
(arXiv 2309.12619). A model updated only on the tokens it already finds most
probable amplifies the degenerate attributes of the data.
"""
from fractions import Fraction
from typing import Optional, Tuple, Union

import torch
from torch import Tensor


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
    order = _rank_order(values, pad)
    rank = torch.empty_like(order)
    rank.scatter_(0, order, torch.arange(order.numel(), device=order.device))
    return (rank < k) & ~pad


def _rank_order(values: Tensor, pad: Tensor) -> Tensor:
    """Positions of ``values`` from the smallest, pads last, ties by position."""
    ranked = values.detach().reshape(-1).float().masked_fill(pad.reshape(-1), float("inf"))
    return torch.sort(ranked, stable=True).indices


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


def truncated_nll_loss(
    lprobs: Tensor,
    target: Tensor,
    ratio: float,
    ignore_index: int = -100,
    num_tokens: Optional[int] = None,
) -> Tuple[Tensor, Tensor, Union[int, Tensor]]:
    """Sum of the NLL of the ``ceil(ratio * N)`` lowest-NLL non-pad tokens.

    Returns ``(loss, nll_loss, kept)``: the truncated sum, the full NLL sum over all
    non-pad tokens, and the number of kept tokens (an int when ``num_tokens``, the
    host's count of non-pad tokens, is given; else a 0-dim tensor, counted without
    a host sync). Dropped tokens contribute exactly zero gradient.
    """
    target = target.view(-1)
    pad = target.eq(ignore_index)
    nll = (-lprobs.gather(dim=-1, index=target.unsqueeze(-1)).squeeze(-1)).masked_fill(
        pad, 0.0
    )
    keep = keep_mask_lowest(nll, pad, ratio, num_tokens)
    loss = nll.masked_fill(~keep, 0.0).sum()
    kept = keep.sum() if num_tokens is None else min(num_kept(num_tokens, ratio), num_tokens)
    return loss, nll.sum(), kept
