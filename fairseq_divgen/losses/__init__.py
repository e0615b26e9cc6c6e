"""The objectives as pure torch (no fairseq imports), each defined once.

Each objective is a :class:`ChunkObjective` (its sums and closed-form gradient for a
chunk of rows, in its own module) with one function that runs it through
:func:`chunked_loss` over any source: a model's logits, :class:`LogProbs`, or a
:class:`Projection` (features and output layer, the fused path).
"""

from .chunked import ChunkObjective, FrozenLogits, LogProbs, Projection, chunked_loss
from .error_norm import ErrorNormObjective, error_norm_truncated_loss
from .lfd import LfdObjective, lfd_loss
from .loss_truncation import (
    LossHistory,
    SequenceTruncationObjective,
    linear_quantile,
    loss_truncation_loss,
    mark_used,
)
from .mixce import MixceObjective, mixce_loss
from .tailr import TailrObjective, scheduled_gamma, tailr_loss, tailr_weights
from .truncation import LabelSmoothedObjective, keep_mask_lowest, num_kept, truncated_nll_loss
from .unlikelihood import (
    UnlikelihoodObjective,
    log1mexp,
    previous_token_candidates,
    unlikelihood_loss,
)

__all__ = [
    "ChunkObjective",
    "ErrorNormObjective",
    "FrozenLogits",
    "LabelSmoothedObjective",
    "LfdObjective",
    "LogProbs",
    "LossHistory",
    "MixceObjective",
    "Projection",
    "SequenceTruncationObjective",
    "TailrObjective",
    "UnlikelihoodObjective",
    "chunked_loss",
    "error_norm_truncated_loss",
    "keep_mask_lowest",
    "lfd_loss",
    "linear_quantile",
    "log1mexp",
    "loss_truncation_loss",
    "mark_used",
    "mixce_loss",
    "num_kept",
    "previous_token_candidates",
    "scheduled_gamma",
    "tailr_loss",
    "tailr_weights",
    "truncated_nll_loss",
    "unlikelihood_loss",
]
