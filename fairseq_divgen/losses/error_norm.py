"""Error norm truncation (ENT): drop the tokens whose predicted distribution is far
from the gold one-hot vector.

Li et al., "Error Norm Truncation: Robust Training in the Presence of Data Noise for
Text Generation Models", ICLR 2024. The error norm of target position t is

    e_t = || q_t - onehot(y_t) ||_2 = sqrt( sum_v q_t(v)^2 - 2 q_t(y_t) + 1 ),

which lies in [0, sqrt 2]. It is large when the model is confident of another token
(a likely data error), not merely when it is unsure, which the NLL cannot tell
apart. Tokens with ``e_t > threshold`` are left out of the (label-smoothed) loss;
the norm is a constant for the gradient, so a dropped token gets exactly zero
gradient (docs/algorithms.md).
"""

from typing import Dict, Optional

import torch
from torch import Tensor

from .chunked import ChunkObjective, Source, chunked_loss
from .softmax import label_smoothed, softmax_rows


class ErrorNormObjective(ChunkObjective):
    """fairseq's label-smoothed NLL of the rows with ``||q - onehot(y)||_2 <= threshold``
    (of every non-pad row unless ``truncate``); ``kept`` counts the rows within the
    threshold either way and ``norm`` sums the norms."""

    names = ("loss", "nll", "kept", "norm")

    def __init__(self, target, threshold, epsilon, pad, truncate=True, accuracy=False):
        super().__init__(target, pad, accuracy)
        self.threshold, self.eps, self.truncate = threshold, epsilon, truncate

    def chunk(self, z, t, real, rows, want_grad, out):
        lse, q, nll, real = softmax_rows(z, t, real, True, out, self.normalized)
        sq = (q * q).sum(-1, keepdim=True)
        # rounding can leave [0, 2]; clamped, a threshold of sqrt 2 never drops a token
        norms = (sq - 2.0 * torch.exp(-nll) + 1.0).clamp_(min=0.0, max=2.0).sqrt_()
        norms.masked_fill_(~real, 0.0)
        keep = real if self.threshold is None else real & norms.le(self.threshold)
        used = keep if self.truncate else real
        loss, grad = label_smoothed(z, t, lse, q, nll, used, self.eps, want_grad)
        return torch.stack([loss, nll.sum(), keep.sum().to(z.dtype), norms.sum()]), grad


def error_norm_truncated_loss(
    source: Source,
    target: Tensor,
    threshold: Optional[float],
    epsilon: float = 0.0,
    ignore_index: int = -100,
    truncate: bool = True,
    accuracy: bool = False,
    rows: Optional[int] = None,
) -> Dict[str, Tensor]:
    """Label-smoothed NLL (fairseq's convention, ``eps_i = eps / (V - 1)``) summed over
    the non-pad tokens whose error norm is at most ``threshold``: ``loss``, ``nll`` (plain
    NLL of every token), ``kept`` (tokens within the threshold) and ``norm`` (the sum of
    the error norms). With ``threshold`` None or ``truncate`` False the loss runs over
    every non-pad token, and is then fairseq's ``label_smoothed_nll_loss``."""
    objective = ErrorNormObjective(target, threshold, epsilon, ignore_index, truncate, accuracy)
    return chunked_loss(source, objective, rows)
