"""MixCE, token-level approximation: MLE with each token weighted by a mix of 1 and
the model's own (detached) probability of it.

Zhang et al., "MixCE: Training Autoregressive Language Models by Mixing Forward and
Reverse Cross-Entropies", ACL 2023. Mixing the forward cross-entropy (MLE) with the
reverse one, and approximating the latter's gradient with the model's own
distribution, gives

    L = sum_t (eta + (1 - eta) * p_t) * -log q_t(y_t),    p_t = q_t(y_t), detached,

with ``p_t`` from the same forward pass as the loss (as in the authors' code, which
takes ``exp(-nll)`` of the token losses). eta = 1 is MLE; eta = 0 weights each token
by its own probability.
"""
from typing import Tuple

import torch
import torch.nn.functional as F
from torch import Tensor


def mixce_loss(
    lprobs: Tensor, target: Tensor, eta: float, ignore_index: int = -100
) -> Tuple[Tensor, Tensor, Tensor]:
    """Summed MixCE loss over non-pad tokens: ``(loss, nll_loss, weight_sum)``.

    ``lprobs``: (N, V) log-probabilities, ``target``: (N,). ``nll_loss`` is the plain
    NLL sum and ``weight_sum`` the sum of ``eta + (1 - eta) p_t`` over non-pad tokens.
    With ``eta`` = 1 the loss is fairseq's ``cross_entropy`` sum (``F.nll_loss``), bit
    for bit.
    """
    acc = torch.promote_types(lprobs.dtype, torch.float32)
    pad = target.eq(ignore_index)
    if eta == 1.0:
        nll_sum = F.nll_loss(lprobs, target, ignore_index=ignore_index, reduction="sum").to(acc)
        return nll_sum, nll_sum, (~pad).sum().to(acc)
    nll = F.nll_loss(lprobs, target, ignore_index=ignore_index, reduction="none").to(acc)
    with torch.no_grad():
        weight = (eta + (1.0 - eta) * torch.exp(-nll)).masked_fill_(pad, 0.0)
    return (weight * nll).sum(), nll.detach().sum(), weight.sum()
