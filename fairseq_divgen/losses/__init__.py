"""Pure-torch loss functions (no fairseq imports), one concept per module."""
from .lfd import LfdLoss, lfd_loss
from .tailr import scheduled_gamma, tailr_loss, tailr_weights
from .truncation import keep_mask_lowest, truncated_nll_loss

__all__ = [
    "LfdLoss",
    "keep_mask_lowest",
    "lfd_loss",
    "scheduled_gamma",
    "tailr_loss",
    "tailr_weights",
    "truncated_nll_loss",
]
