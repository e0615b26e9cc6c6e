"""Pure-torch loss functions (no fairseq imports), one concept per module."""
from .error_norm import ErrorNormLoss, error_norm_truncated_loss, error_norms, squared_probability_sums
from .fused_losses import (
    fused_error_norm_truncated_loss,
    fused_lfd_loss,
    fused_loss_truncation_loss,
    fused_mixce_loss,
    fused_tailr_loss,
    fused_truncated_nll_loss,
    fused_unlikelihood_loss,
)
from .fused_output import Projection, fused_output_loss
from .lfd import LfdLoss, lfd_loss
from .loss_truncation import LossHistory, LossTruncationLoss, linear_quantile, loss_truncation_loss
from .mixce import mixce_loss
from .tailr import scheduled_gamma, tailr_loss, tailr_weights
from .truncation import keep_mask_lowest, truncated_nll_loss
from .unlikelihood import UnlikelihoodLoss, log1mexp, previous_token_candidates, unlikelihood_loss

__all__ = [
    "ErrorNormLoss",
    "LfdLoss",
    "LossHistory",
    "LossTruncationLoss",
    "Projection",
    "UnlikelihoodLoss",
    "error_norm_truncated_loss",
    "error_norms",
    "fused_error_norm_truncated_loss",
    "fused_lfd_loss",
    "fused_loss_truncation_loss",
    "fused_mixce_loss",
    "fused_output_loss",
    "fused_tailr_loss",
    "fused_truncated_nll_loss",
    "fused_unlikelihood_loss",
    "keep_mask_lowest",
    "lfd_loss",
    "linear_quantile",
    "log1mexp",
    "loss_truncation_loss",
    "mixce_loss",
    "previous_token_candidates",
    "scheduled_gamma",
    "squared_probability_sums",
    "tailr_loss",
    "tailr_weights",
    "truncated_nll_loss",
    "unlikelihood_loss",
]
