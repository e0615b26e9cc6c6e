"""Pure-torch loss functions (no fairseq imports), one concept per module."""
from .poe import poe_nll_loss
from .tailr import scheduled_gamma, tailr_loss, tailr_weights
from .truncation import keep_mask_lowest, truncated_nll_loss

__all__ = [
    "keep_mask_lowest",
    "poe_nll_loss",
    "scheduled_gamma",
    "tailr_loss",
    "tailr_weights",
    "truncated_nll_loss",
]
