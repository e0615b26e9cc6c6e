"""Pure-torch loss functions (no fairseq imports), one concept per module."""
from .error_norm import ErrorNormLoss, error_norm_truncated_loss, error_norms, squared_probability_sums
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
    "UnlikelihoodLoss",
    "error_norm_truncated_loss",
    "error_norms",
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
