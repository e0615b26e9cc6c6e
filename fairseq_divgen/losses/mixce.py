"""MixCE, token-level approximation: MLE with each token weighted by a mix of 1 and
the model's own (detached) probability of it.

Zhang et al., "MixCE: Training Autoregressive Language Models by Mixing Forward and
Reverse Cross-Entropies", ACL 2023. Mixing the forward cross-entropy (MLE) with the
reverse one, and approximating the latter's gradient with the model's own
distribution, gives

    L = sum_t (eta + (1 - eta) * p_t) * -log q_t(y_t),    p_t = q_t(y_t), detached,

with ``p_t`` from the same forward pass as the loss (as in the authors' code, which
takes ``exp(-nll)`` of the token losses). eta = 1 is MLE; eta = 0 weights each token
by its own probability (docs/algorithms.md).
"""

from typing import Dict, Optional

import torch
from torch import Tensor

from .chunked import ChunkObjective, Source, chunked_loss
from .softmax import closed_form_grad, softmax_rows


class MixceObjective(ChunkObjective):
    """``sum_t (eta + (1 - eta) p_t) nll_t``, the weight detached."""

    names = ("loss", "nll", "weight")

    def __init__(self, target, eta, pad, accuracy=False):
        super().__init__(target, pad, accuracy)
        self.eta = eta

    def chunk(self, z, t, real, rows, want_grad, out):
        lse, q, nll, real = softmax_rows(z, t, real, want_grad, out, self.normalized)
        w = (self.eta + (1.0 - self.eta) * torch.exp(-nll)).masked_fill_(~real, 0.0)
        grad = closed_form_grad(q, t, w, w) if want_grad else None
        return torch.stack([(w * nll).sum(), nll.sum(), w.sum()]), grad


def mixce_loss(
    source: Source,
    target: Tensor,
    eta: float,
    ignore_index: int = -100,
    accuracy: bool = False,
    rows: Optional[int] = None,
) -> Dict[str, Tensor]:
    """Summed MixCE loss over non-pad tokens: ``loss``, ``nll`` (plain NLL sum) and
    ``weight`` (the sum of ``eta + (1 - eta) p_t``); ``source`` as ``chunked_loss``."""
    return chunked_loss(source, MixceObjective(target, eta, ignore_index, accuracy), rows)
