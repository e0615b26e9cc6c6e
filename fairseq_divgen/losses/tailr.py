"""TaiLr: token-level total-variation objective.

Ji et al., "Tailoring Language Generation Models under Total Variation Distance",
ICLR 2023. The TVD estimate through the proxy ``p_gamma = gamma * data +
(1 - gamma) * model`` turns into maximum likelihood with each gold token weighted
by ``w = p / (gamma + (1 - gamma) * p)``, where ``p`` is the model's own (detached)
probability of that token (docs/algorithms.md).
"""

import math
from typing import Dict, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from .chunked import ChunkObjective, Source, chunked_loss
from .softmax import closed_form_grad, smooth_sums, softmax_rows


def scheduled_gamma(gamma: float, warmup_updates: int, num_updates: int) -> float:
    """gamma in force after ``num_updates`` updates: a linear ramp from 0 (exactly MLE)
    to ``gamma`` over the first ``warmup_updates`` updates, then ``gamma`` (always
    ``gamma`` when ``warmup_updates`` is 0)."""
    if warmup_updates <= 0 or num_updates >= warmup_updates:
        return gamma
    return gamma * max(num_updates, 0) / warmup_updates


def tailr_weights(gold_lprobs: Tensor, gamma: float, min_weight: float) -> Tensor:
    """Per-token weight ``clamp(p / (gamma + (1 - gamma) p), min_weight, 1)`` from log p.

    Computed in log space and in fp32 (fp64 for fp64 inputs) so that nothing overflows:
    ``log w = log p - log(gamma + (1 - gamma) p)``. The result is detached (a constant
    for autograd). ``gamma`` is a Python float (a schedule passes the value in force).
    """
    lp = gold_lprobs.detach()
    lp = lp.to(torch.promote_types(lp.dtype, torch.float32))
    if gamma == 0.0:
        return torch.ones_like(lp)
    if gamma == 1.0:
        return lp.exp().clamp_(min=min_weight, max=1.0)
    # log(gamma + (1 - gamma) p) = log gamma + softplus(log p + log((1 - gamma) / gamma)):
    # scalar arithmetic only, stable for every p in [0, 1].
    log_gamma = math.log(gamma)
    log_denom = F.softplus(lp + (math.log1p(-gamma) - log_gamma)) + log_gamma
    # p = 0 gives log w = -inf - finite = -inf, so w = 0 before the clamp (no NaN).
    return (lp - log_denom).exp().clamp_(min=min_weight, max=1.0)


class TailrObjective(ChunkObjective):
    """``(1 - eps) sum_t w_t nll_t + (eps / V) sum_t sum_v -log q_t(v)``, ``w`` detached;
    the smoothing term is not weighted (the authors' convention, ``eps / V``)."""

    names = ("loss", "nll", "weight")

    def __init__(self, target, gamma, min_weight, epsilon, pad, accuracy=False):
        super().__init__(target, pad, accuracy)
        self.gamma, self.min_weight, self.eps = gamma, min_weight, epsilon

    def chunk(self, z, t, real, rows, want_grad, out):
        eps, vocab = self.eps, z.size(-1)
        lse, q, nll, real = softmax_rows(z, t, real, want_grad, out, self.normalized)
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


def tailr_loss(
    source: Source,
    target: Tensor,
    gamma: float,
    min_weight: float,
    epsilon: float = 0.0,
    ignore_index: int = -100,
    accuracy: bool = False,
    rows: Optional[int] = None,
) -> Dict[str, Tensor]:
    """Summed TaiLr loss over non-pad tokens: ``loss``, ``nll`` (the plain NLL sum),
    ``weight`` (the sum of ``w_t``) and with ``accuracy`` ``n_correct``.

    ``source``: (N, V) logits or log-probabilities, or a :class:`Projection`;
    ``target``: N targets.
    """
    objective = TailrObjective(target, gamma, min_weight, epsilon, ignore_index, accuracy)
    return chunked_loss(source, objective, rows)
