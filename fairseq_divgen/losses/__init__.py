"""Pure-torch loss functions (no fairseq imports), one concept per module."""
from .lfd import LfdLoss, lfd_loss
from .mixce import mixce_loss
from .tailr import scheduled_gamma, tailr_loss, tailr_weights
from .truncation import keep_mask_lowest, truncated_nll_loss
from .unlikelihood import UnlikelihoodLoss, log1mexp, previous_token_candidates, unlikelihood_loss

__all__ = [
    "LfdLoss",
    "UnlikelihoodLoss",
    "keep_mask_lowest",
    "lfd_loss",
    "log1mexp",
    "mixce_loss",
    "previous_token_candidates",
    "scheduled_gamma",
    "tailr_loss",
    "tailr_weights",
    "truncated_nll_loss",
    "unlikelihood_loss",
]
