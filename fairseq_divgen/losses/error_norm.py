"""Error norm truncation (ENT): drop the tokens whose predicted distribution is far
from the gold one-hot vector.

Li et al., "Error Norm Truncation: Robust Training in the Presence of Data Noise for
Text Generation Models", ICLR 2024. The error norm of target position t is

    e_t = || q_t - onehot(y_t) ||_2 = sqrt( sum_v q_t(v)^2 - 2 q_t(y_t) + 1 ),

which lies in [0, sqrt 2]. It is large when the model is confident of another token
(a likely data error), not merely when it is unsure, which the NLL cannot tell
apart. Tokens with ``e_t > threshold`` are left out of the (label-smoothed) loss;
the norm is computed without gradient, so a dropped token gets exactly zero gradient.
"""
from typing import NamedTuple, Optional

import torch
from torch import Tensor

# Rows per chunk of the sum of squares: bounds its temporary to about this many
# elements (64 MiB in fp32) whatever the batch and vocabulary.
CHUNK_ELEMENTS = 1 << 24


class ErrorNormLoss(NamedTuple):
    """Sums over non-pad tokens."""

    loss: Tensor  # label-smoothed NLL of the kept tokens (of all, with truncate=False)
    nll: Tensor  # plain NLL of every token
    kept: Tensor  # number of tokens whose error norm is at most the threshold
    norm_sum: Tensor  # sum of the error norms


def squared_probability_sums(lprobs: Tensor, chunk_elements: int = CHUNK_ELEMENTS) -> Tensor:
    """``sum_v q(v)^2`` of each row of (N, V) log-probabilities, in fp32 or wider,
    without gradient; computed in row chunks so that no full (N, V) temporary is made."""
    acc = torch.promote_types(lprobs.dtype, torch.float32)
    rows = max(1, chunk_elements // max(1, lprobs.size(-1)))
    with torch.no_grad():
        parts = [
            chunk.to(acc).mul(2.0).exp_().sum(-1) for chunk in torch.split(lprobs.detach(), rows)
        ]
    return torch.cat(parts) if parts else lprobs.new_zeros((0,), dtype=acc)


def error_norms(lprobs: Tensor, target: Tensor) -> Tensor:
    """``||q_t - onehot(y_t)||_2`` of each row (no gradient); (N, V) log-probs, (N,) targets."""
    sq = squared_probability_sums(lprobs)
    with torch.no_grad():
        gold = lprobs.detach().gather(-1, target.view(-1, 1)).squeeze(-1).to(sq.dtype).exp()
        # rounding can leave [0, 2]; clamped, a threshold of sqrt 2 never drops a token
        return (sq - 2.0 * gold + 1.0).clamp_(min=0.0, max=2.0).sqrt_()


def error_norm_truncated_loss(
    lprobs: Tensor,
    target: Tensor,
    threshold: Optional[float],
    epsilon: float = 0.0,
    ignore_index: int = -100,
    truncate: bool = True,
) -> ErrorNormLoss:
    """Label-smoothed NLL (fairseq's convention, ``eps_i = eps / (V - 1)``) summed over
    the non-pad tokens whose error norm is at most ``threshold``.

    ``lprobs``: (N, V) log-probabilities, ``target``: (N,). With ``threshold`` None or
    ``truncate`` False the sum runs over every non-pad token, and is then fairseq's
    ``label_smoothed_nll_loss``; ``kept`` still counts the tokens within the threshold.
    """
    target = target.view(-1, 1)
    pad = target.eq(ignore_index)
    acc = torch.promote_types(lprobs.dtype, torch.float32)
    norms = error_norms(lprobs, target).view(-1, 1).masked_fill_(pad, 0.0)
    keep = ~pad if threshold is None else (~pad & norms.le(threshold))
    drop = ~keep if truncate else pad
    nll = -lprobs.gather(dim=-1, index=target).to(acc)
    nll.masked_fill_(pad, 0.0)
    nll_sum = nll.detach().sum()
    loss = nll.masked_fill(drop, 0.0).sum()
    if epsilon > 0.0:
        eps_i = epsilon / (lprobs.size(-1) - 1)
        smooth = (-lprobs.sum(dim=-1, keepdim=True, dtype=acc)).masked_fill(drop, 0.0).sum()
        loss = (1.0 - epsilon - eps_i) * loss + eps_i * smooth
    return ErrorNormLoss(loss, nll_sum, keep.sum(), norms.sum())
