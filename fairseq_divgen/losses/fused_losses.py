"""The criterions' losses from decoder features and the output layer, fused.

Each function computes the same sums as its unfused counterpart (``tailr_loss`` on
``log_softmax(h W^T + b)`` and so on) through :func:`fused_output_loss`, so the
(N, V) logits never exist at once, and returns ``(result, n_correct)``: the unfused
function's result and, with ``accuracy``, the number of non-pad rows whose argmax is
the target (else None). ``h``: (N, d) features, ``weight``: (V, d), ``bias``: (V,) or
None; ``rows`` overrides the rows per chunk.

``truncated_ce`` selects tokens by their loss over the whole batch: a pass without
gradient computes every token's NLL (one matmul), the selection is made as
``keep_mask_lowest`` makes it, and the gradient pass runs over the kept rows only
(1 + 3R matmuls instead of 3). Loss truncation selects whole sequences, each by its
own tokens only, so chunks of whole sequences select and differentiate in one pass.
"""
import math
from typing import Optional, Tuple, Union

import torch
from torch import Tensor

from .error_norm import ErrorNormLoss
from .fused_chunks import (
    ErrorNormChunk,
    LabelSmoothedChunk,
    LfdChunk,
    MixceChunk,
    SequenceTruncationChunk,
    TailrChunk,
    UnlikelihoodChunk,
)
from .fused_output import accumulator_dtype, chunk_rows, fused_output_loss
from .lfd import LfdLoss
from .loss_truncation import LossTruncationLoss
from .truncation import keep_mask_lowest, lowest_rows, num_kept, ratio_fraction
from .unlikelihood import UnlikelihoodLoss, previous_token_candidates


def _run(h, weight, bias, objective, rows=None):
    return fused_output_loss(h, weight, bias, objective, objective.all_names, rows)


def _wants_grad(*tensors) -> bool:
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def fused_tailr_loss(
    h, weight, bias, target, gamma, min_weight, epsilon=0.0, ignore_index=-100, accuracy=False,
    rows=None,
) -> Tuple[Tuple[Tensor, Tensor, Tensor], Optional[Tensor]]:  # fmt: skip
    """``tailr_loss`` of ``h W^T + b``: ``((loss, nll_loss, weight_sum), n_correct)``."""
    obj = TailrChunk(target, gamma, min_weight, epsilon, ignore_index, accuracy)
    out = _run(h, weight, bias, obj, rows)
    return (out["loss"], out["nll"], out["weight"]), out.get("n_correct")


def fused_mixce_loss(
    h, weight, bias, target, eta, ignore_index=-100, accuracy=False, rows=None
) -> Tuple[Tuple[Tensor, Tensor, Tensor], Optional[Tensor]]:
    """``mixce_loss`` of ``h W^T + b``: ``((loss, nll_loss, weight_sum), n_correct)``."""
    out = _run(h, weight, bias, MixceChunk(target, eta, ignore_index, accuracy), rows)
    return (out["loss"], out["nll"], out["weight"]), out.get("n_correct")


def fused_error_norm_truncated_loss(
    h, weight, bias, target, threshold, epsilon=0.0, ignore_index=-100, truncate=True,
    accuracy=False, rows=None,
) -> Tuple[ErrorNormLoss, Optional[Tensor]]:  # fmt: skip
    """``error_norm_truncated_loss`` of ``h W^T + b`` (the norms from the same chunks)."""
    obj = ErrorNormChunk(target, threshold, epsilon, ignore_index, truncate, accuracy)
    out = _run(h, weight, bias, obj, rows)
    result = ErrorNormLoss(out["loss"], out["nll"], out["kept"].long(), out["norm"])
    return result, out.get("n_correct")


def fused_unlikelihood_loss(
    h, weight, bias, target, alpha, ignore_index=-100, accuracy=False, rows=None
) -> Tuple[UnlikelihoodLoss, Optional[Tensor]]:
    """``unlikelihood_loss`` of ``h W^T + b``; ``target`` (B, T), ``h`` (B * T, d).

    Each row carries its candidates: the tokens of its own sequence (B * T, T) and
    which of them are candidates (``previous_token_candidates``).
    """
    cand_tokens = cand_mask = None
    count = h.new_zeros((), dtype=accumulator_dtype(h.dtype))
    if alpha != 0.0:
        batch, length = target.shape
        cand = previous_token_candidates(target, ignore_index)  # [b, t, s]: y_{b,s} at t
        cand_mask = cand.reshape(batch * length, length)
        cand_tokens = target.unsqueeze(1).expand(batch, length, length).reshape(batch * length, -1)
        count = cand.sum()
    obj = UnlikelihoodChunk(target, cand_tokens, cand_mask, alpha, ignore_index, accuracy=accuracy)
    out = _run(h, weight, bias, obj, rows)
    return UnlikelihoodLoss(out["loss"], out["nll"], out["penalty"], count), out.get("n_correct")


def fused_loss_truncation_loss(
    h, weight, bias, target, cutoff, epsilon=0.0, ignore_index=-100, truncate=True,
    accuracy=False, rows=None,
) -> Tuple[LossTruncationLoss, Optional[Tensor]]:  # fmt: skip
    """``loss_truncation_loss`` of ``h W^T + b``; ``target`` (B, T), ``h`` (B * T, d).

    Chunks hold whole sequences (``rows``, if given, must be a multiple of T).
    """
    batch, length = target.shape
    rows = rows or chunk_rows(weight.size(0), multiple=length)
    if rows % length:
        raise ValueError(f"rows per chunk ({rows}) must be a multiple of the length {length}")
    seq_nll = h.new_full((batch,), math.nan, dtype=accumulator_dtype(h.dtype))
    obj = SequenceTruncationChunk(
        target, cutoff, epsilon, ignore_index, truncate, seq_nll, accuracy
    )
    out = _run(h, weight, bias, obj, rows)
    kept_sequences, kept_tokens = out["kept_sequences"].long(), out["kept_tokens"].long()
    result = LossTruncationLoss(out["loss"], out["nll"], seq_nll, kept_sequences, kept_tokens)
    return result, out.get("n_correct")


def fused_truncated_nll_loss(
    h, weight, bias, target, ratio, ignore_index=-100, num_tokens=None, max_tokens=None,
    accuracy=False, rows=None,
) -> Tuple[Tuple[Tensor, Tensor, Union[int, Tensor]], Optional[Tensor]]:  # fmt: skip
    """``truncated_nll_loss`` of ``h W^T + b``: ``((loss, nll_loss, kept), n_correct)``.

    ``num_tokens``: the host's count of non-pad targets, or None (then counted on the
    device, and ``max_tokens``, a host upper bound of it, limits the gradient pass).
    With ``ratio`` 1 one pass, and ``nll_loss`` is ``loss`` (with its gradient); else a
    pass without gradient ranks the NLLs (``nll_loss`` has no gradient) and the
    gradient pass (when one is needed) runs over the kept rows.
    """
    target = target.reshape(-1)
    pad = target.eq(ignore_index)
    if ratio_fraction(ratio) >= 1:  # every token is kept: no ranking pass
        obj = LabelSmoothedChunk(target, 0.0, ignore_index, accuracy=accuracy)
        out = _run(h, weight, bias, obj, rows)
        kept = (~pad).sum() if num_tokens is None else num_tokens
        return (out["loss"], out["loss"], kept), out.get("n_correct")  # both the full NLL
    nll = h.new_zeros(target.shape, dtype=accumulator_dtype(h.dtype))
    with torch.no_grad():
        ranking = LabelSmoothedChunk(target, 0.0, ignore_index, nll_out=nll, accuracy=accuracy)
        first = _run(h, weight, bias, ranking, rows)
    if num_tokens is None:
        kept = num_kept((~pad).sum(), ratio)
    else:
        kept = min(num_kept(num_tokens, ratio), num_tokens)
    if not _wants_grad(h, weight, bias):
        keep = keep_mask_lowest(nll, pad, ratio, num_tokens)
        return (nll.masked_fill(~keep, 0.0).sum(), first["nll"], kept), first.get("n_correct")
    index, valid = lowest_rows(nll, pad, ratio, num_tokens, max_tokens)
    obj = LabelSmoothedChunk(target[index], 0.0, ignore_index, keep=valid)
    out = _run(h.index_select(0, index), weight, bias, obj, rows)
    return (out["loss"], first["nll"], kept), first.get("n_correct")


def fused_lfd_loss(
    h, weight, bias, degenerative, target, beta, mle_weight, epsilon=0.0, ignore_index=-100,
    eos_index=None, main_eos=False, accuracy=False, rows=None,
) -> Tuple[LfdLoss, Optional[Tensor]]:  # fmt: skip
    """``lfd_loss`` of ``h W^T + b``; ``degenerative``: the frozen model's
    :class:`Projection` (its logits made chunk by chunk), its (N, V) logits, or None."""
    if main_eos and eos_index is None:
        raise ValueError("main_eos needs eos_index")
    if beta != 0.0 and degenerative is None:
        raise ValueError("beta != 0 needs the degenerative model's logits")
    obj = LfdChunk(target, degenerative, float(beta), float(mle_weight), float(epsilon),
                   ignore_index, eos_index, bool(main_eos), accuracy)  # fmt: skip
    out = _run(h, weight, bias, obj, rows)
    no_degen_nll = degenerative is None or _wants_grad(h, weight, bias)
    result = LfdLoss(out["loss"], out["poe_nll"], out["main_nll"], out["main_eos_nll"],
                     None if no_degen_nll else out["degen_nll"])  # fmt: skip
    return result, out.get("n_correct")
