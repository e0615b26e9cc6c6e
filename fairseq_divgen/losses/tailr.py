"""TaiLr: token-level total-variation objective.

Ji et al., "Tailoring Language Generation Models under Total Variation Distance",
ICLR 2023. The TVD estimate through the proxy ``p_gamma = gamma * data +
(1 - gamma) * model`` turns into maximum likelihood with each gold token weighted
by ``w = p / (gamma + (1 - gamma) * p)``, where ``p`` is the model's own (detached)
probability of that token.
"""
import math
from typing import Tuple

import torch
import torch.nn.functional as F
from torch import Tensor


def scheduled_gamma(gamma: float, warmup_updates: int, num_updates: int) -> float:
    """gamma in force after ``num_updates`` updates: a linear ramp from 0 (exactly MLE)
    to ``gamma`` over the first ``warmup_updates`` updates, then ``gamma`` (always
    ``gamma`` when ``warmup_updates`` is 0)."""
    if warmup_updates <= 0 or num_updates >= warmup_updates:
        return gamma
    return gamma * max(num_updates, 0) / warmup_updates


def tailr_weights(gold_lprobs: Tensor, gamma: float, min_weight: float) -> Tensor:
    """Per-token weight ``clamp(p / (gamma + (1 - gamma) p), min_weight, 1)`` from log p.

    Computed in log space and in fp32 (fp64 for fp64 inputs) so that no
    vocabulary-sized tensor is needed and nothing overflows:
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


def tailr_loss(
    lprobs: Tensor,
    target: Tensor,
    gamma: float,
    min_weight: float,
    epsilon: float = 0.0,
    ignore_index: int = -100,
) -> Tuple[Tensor, Tensor, Tensor]:
    """Summed TaiLr loss over non-pad tokens.

    ``lprobs``: (N, V) log-probabilities, ``target``: (N,). Returns
    ``(loss, nll_loss, weight_sum)`` where
    ``loss = (1 - eps) * sum_t w_t nll_t + (eps / V) * sum_t sum_v -log q_t(v)``
    (the smoothing term is not weighted, as in the authors' code), ``nll_loss`` is
    the plain unweighted NLL sum and ``weight_sum`` the sum of ``w_t`` over
    non-pad tokens (for logging the mean weight).
    """
    target = target.view(-1, 1)
    pad = target.eq(ignore_index)
    # Sums in at least fp32: with half log-probs, a row's smoothing sum or the batch's
    # NLL sum passes fp16's maximum (65504). No-ops for fp32 / fp64 inputs.
    acc = torch.promote_types(lprobs.dtype, torch.float32)
    gold = lprobs.gather(dim=-1, index=target)
    nll = (-gold.to(acc)).masked_fill(pad, 0.0)
    weight = tailr_weights(gold, gamma, min_weight).masked_fill_(pad, 0.0)
    nll_sum = nll.sum()
    loss = (weight.to(acc) * nll).sum()
    if epsilon > 0.0:
        smooth = (-lprobs.sum(dim=-1, keepdim=True, dtype=acc)).masked_fill(pad, 0.0).sum()
        loss = (1.0 - epsilon) * loss + (epsilon / lprobs.size(-1)) * smooth
    return loss, nll_sum, weight.sum()
