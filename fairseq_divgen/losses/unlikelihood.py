"""Token-level unlikelihood training: MLE plus a penalty on the tokens already seen.

Welleck et al., "Neural Text Generation with Unlikelihood Training", ICLR 2020
(the token-level objective, their eq. 4 with the previous-context candidates). At
target position t of a sequence, the candidates ``C_t`` are the distinct tokens at
positions s < t of the same target sequence, other than the gold token ``y_t`` (and
padding); the model is pushed away from each of them:

    L = sum_t [ -log q_t(y_t) + alpha * sum_{c in C_t} -log(1 - q_t(c)) ]

The candidates are a (batch, length, length) structure built per sequence, so they
never cross from one sentence of the batch to another, and no (tokens, vocabulary)
mask is built: the log-probabilities of the gold token and of every earlier target
token are read with one gather.
"""
import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

# The authors' clamp, 1 - q >= 1e-5, so the penalty of one candidate is at most
# -log(1e-5) = 11.5. It is needed: a confident fp32 model gives log q = 0 exactly
# (q rounds to 1), where -log(1 - q) is infinite.
MIN_ONE_MINUS_P = 1e-5


class UnlikelihoodLoss(NamedTuple):
    """Sums over the non-pad target tokens of a batch."""

    loss: Tensor  # nll + alpha * penalty
    nll: Tensor  # sum_t -log q_t(y_t)
    penalty: Tensor  # sum_t sum_{c in C_t} -log(1 - q_t(c))
    candidates: Tensor  # sum_t |C_t|


def log1mexp(x: Tensor) -> Tensor:
    """``log(1 - exp(x))`` for x <= 0, accurate at both ends (Maechler's split at -log 2)."""
    return torch.where(x > -math.log(2.0), torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


def previous_token_candidates(target: Tensor, ignore_index: int) -> Tensor:
    """Boolean (B, T, T) mask: ``[b, t, s]`` is True iff ``target[b, s]`` is a candidate
    at position t, i.e. s < t, ``target[b, s]`` is neither padding nor ``target[b, t]``,
    and s is the first position of that token in sequence b (each distinct token once).
    Rows of padded positions t are all False."""
    _, length = target.shape
    earlier = torch.ones(length, length, dtype=torch.bool, device=target.device).tril(-1)
    same = target.unsqueeze(2) == target.unsqueeze(1)  # [b, s, s'] = (y_s == y_s')
    first = ~(same & earlier).any(dim=2)  # [b, s]: no s' < s holds the same token
    real = target.ne(ignore_index)
    cand = earlier & (first & real).unsqueeze(1)  # [b, t, s]
    cand &= ~same  # y_s != y_t ([b, t, s] of `same` compares y_t with y_s)
    cand &= real.unsqueeze(2)  # no candidates at padded positions
    return cand


def unlikelihood_loss(
    lprobs: Tensor,
    target: Tensor,
    alpha: float,
    ignore_index: int = -100,
    min_one_minus_p: float = MIN_ONE_MINUS_P,
) -> UnlikelihoodLoss:
    """Token-level unlikelihood loss of a batch, summed over non-pad tokens.

    ``lprobs``: (B, T, V) log-probabilities, ``target``: (B, T). With ``alpha`` = 0
    the loss is computed exactly as fairseq's ``cross_entropy`` (``F.nll_loss``,
    summed) and no candidate is built.
    """
    batch, length, vocab = lprobs.shape
    acc = torch.promote_types(lprobs.dtype, torch.float32)
    if alpha == 0.0:
        nll = F.nll_loss(
            lprobs.reshape(-1, vocab), target.reshape(-1), ignore_index=ignore_index, reduction="sum"
        ).to(acc)
        zero = nll.new_zeros(())
        return UnlikelihoodLoss(nll, nll, zero, zero)
    cand = previous_token_candidates(target, ignore_index)
    # One gather reads the gold token (column 0) and every earlier target token of the
    # same sequence (columns 1..T): one (B, T, 1 + T) read, one sparse backward.
    index = torch.cat([target.unsqueeze(2), target.unsqueeze(1).expand(batch, length, length)], dim=2)
    picked = lprobs.gather(2, index).to(acc)
    pad = target.eq(ignore_index)
    nll = (-picked[:, :, 0]).masked_fill(pad, 0.0).sum()
    # -log(1 - q) with 1 - q clamped at min_one_minus_p: clamp log q first, so that the
    # clamped entries have a finite value and a zero gradient (no inf * 0 = NaN).
    log_q = picked[:, :, 1:].clamp(max=math.log1p(-min_one_minus_p))
    penalty = (-log1mexp(log_q)).masked_fill(~cand, 0.0).sum()
    return UnlikelihoodLoss(nll + alpha * penalty, nll, penalty, cand.sum())
