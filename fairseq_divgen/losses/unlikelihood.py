"""Token-level unlikelihood training: MLE plus a penalty on the tokens already seen.

Welleck et al., "Neural Text Generation with Unlikelihood Training", ICLR 2020
(the token-level objective, their eq. 4 with the previous-context candidates). At
target position t of a sequence, the candidates ``C_t`` are the distinct tokens at
positions s < t of the same target sequence, other than the gold token ``y_t`` (and
padding); the model is pushed away from each of them:

    L = sum_t [ -log q_t(y_t) + alpha * sum_{c in C_t} -log(1 - q_t(c)) ]

The candidates are a (batch, length, length) structure built per sequence, so they
never cross from one sentence of the batch to another, and no (tokens, vocabulary)
mask is built: each row reads the log-probabilities of its own sequence's tokens.
With ``a_c = q(c) / (1 - q(c))``, ``d(-log(1 - q(c)))/dz = a_c (onehot(c) - q)``
(docs/algorithms.md).
"""

import math
from typing import Dict, Optional

import torch
from torch import Tensor

from .chunked import ChunkObjective, Source, chunked_loss
from .softmax import closed_form_grad, softmax_rows

# The authors' clamp, 1 - q >= 1e-5, so the penalty of one candidate is at most
# -log(1e-5) = 11.5. It is needed: a confident fp32 model gives log q = 0 exactly
# (q rounds to 1), where -log(1 - q) is infinite.
MIN_ONE_MINUS_P = 1e-5


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


class UnlikelihoodObjective(ChunkObjective):
    """``nll + alpha sum_c -log(1 - q(c))`` over each row's candidates: ``cand_tokens``
    (N, K) with ``cand_mask`` (N, K); None: no penalty (plain NLL)."""

    names = ("loss", "nll", "penalty")

    def __init__(
        self,
        target,
        cand_tokens,
        cand_mask,
        alpha,
        pad,
        accuracy=False,
        min_one_minus_p=MIN_ONE_MINUS_P,
    ):
        super().__init__(target, pad, accuracy)
        self.cand_tokens, self.cand_mask, self.alpha = cand_tokens, cand_mask, alpha
        self.bound = math.log1p(-min_one_minus_p)

    def chunk(self, z, t, real, rows, want_grad, out):
        lse, q, nll, real = softmax_rows(z, t, real, want_grad, out, self.normalized)
        r = real.to(z.dtype)
        if self.cand_tokens is None:
            grad = closed_form_grad(q, t, r, r) if want_grad else None
            return torch.stack([nll.sum(), nll.sum(), nll.new_zeros(())]), grad
        cand, mask = self.cand_tokens[rows], self.cand_mask[rows]
        log_q = z.gather(-1, cand) - lse
        x = log_q.clamp(max=self.bound)  # 1 - q >= min_one_minus_p: zero gradient beyond
        penalty = (-log1mexp(x)).masked_fill(~mask, 0.0).sum()
        loss = nll.sum() + self.alpha * penalty
        grad = None
        if want_grad:
            # q - onehot(y) + alpha (sum_c a_c onehot(c) - q sum_c a_c); a_c = 0 where clamped
            a = torch.where(mask & log_q.le(self.bound), 1.0 / torch.expm1(-x), 0.0)
            grad = closed_form_grad(q, t, r - self.alpha * a.sum(-1, keepdim=True), r)
            grad.scatter_add_(-1, cand, self.alpha * a)
        return torch.stack([loss, nll.sum(), penalty]), grad


def unlikelihood_loss(
    source: Source,
    target: Tensor,
    alpha: float,
    ignore_index: int = -100,
    accuracy: bool = False,
    rows: Optional[int] = None,
) -> Dict[str, Tensor]:
    """Token-level unlikelihood loss of a batch, summed over non-pad tokens: ``loss``,
    ``nll``, ``penalty`` (sum over tokens and candidates of ``-log(1 - q(c))``) and
    ``candidates`` (their number).

    ``source``: B * T rows of ``target`` (B, T). Each row carries its candidates: the
    tokens of its own sequence and which of them are candidates.
    """
    batch, length = target.shape
    cand_tokens = cand_mask = None
    count = torch.zeros((), dtype=torch.long, device=target.device)
    if alpha != 0.0:
        cand = previous_token_candidates(target, ignore_index)  # [b, t, s]: y_{b,s} at t
        cand_mask = cand.reshape(batch * length, length)
        safe = target.masked_fill(target.eq(ignore_index), 0)  # an ignored id is never read
        cand_tokens = safe.unsqueeze(1).expand(batch, length, length).reshape(batch * length, -1)
        count = cand.sum()
    objective = UnlikelihoodObjective(target, cand_tokens, cand_mask, alpha, ignore_index, accuracy)
    out = chunked_loss(source, objective, rows)
    out["candidates"] = count
    return out
