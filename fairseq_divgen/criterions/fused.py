"""``--fused-output`` for this package's criterions: the batch's decoder features and
output layer for the fused loss path, or the unfused path for models it does not cover."""
import logging
from dataclasses import field
from typing import NamedTuple, Optional

from torch import Tensor

from ..output_layer import output_projection, uncovered_reason

logger = logging.getLogger(__name__)

FUSED_OUTPUT_HELP = (
    "compute the output projection and the loss together, a chunk of tokens at a time, so "
    "that the (tokens, vocabulary) logits never exist at once (same loss and gradients, less "
    "memory); transformer models (an output_projection, no adaptive softmax) only, others "
    "train unfused with a warning"
)


def fused_output_field():
    """The ``fused_output`` dataclass field, the same on every criterion."""
    return field(default=False, metadata={"help": FUSED_OUTPUT_HELP})


class FusedInputs(NamedTuple):
    """What a fused loss needs of one batch (after ``--ignore-prefix-size``)."""

    h: Tensor  # (B * T, d) decoder features
    weight: Tensor  # (V, d) output projection (may be the input embedding)
    bias: Optional[Tensor]  # (V,) or None
    target: Tensor  # (B, T)

    @property
    def projection(self):
        """``(h, weight, bias)``: the arguments of the fused loss functions."""
        return self.h, self.weight, self.bias


class FusedOutputMixin:
    """For a ``LabelSmoothedCrossEntropyCriterion`` subclass: set ``self.fused_output``,
    then :meth:`fused_inputs` gives the batch's inputs for the fused path, or None."""

    fused_output = False
    _fused_fallback_logged = False

    def fused_inputs(self, model, sample) -> Optional[FusedInputs]:
        """Run ``model`` without its output layer; None (unfused path, one warning per
        criterion) when ``--fused-output`` is off or the model is not covered."""
        if not self.fused_output:
            return None
        reasons = self.__dict__.setdefault("_fused_reasons", {})  # per model, found once
        if id(model) not in reasons:
            reasons[id(model)] = uncovered_reason(model)
        reason = reasons[id(model)]
        if reason is not None:
            if not self._fused_fallback_logged:
                self._fused_fallback_logged = True
                logger.warning(
                    f"--fused-output: {type(self).__name__} computes the unfused loss for "
                    f"{type(model).__name__}: {reason}"
                )
            return None
        features, extra = model(**sample["net_input"], features_only=True)
        target = model.get_targets(sample, (features, extra))
        if self.ignore_prefix_size > 0:
            features = features[:, self.ignore_prefix_size :]
            target = target[:, self.ignore_prefix_size :]
        proj = output_projection(model)
        return FusedInputs(features.reshape(-1, features.size(-1)), proj.weight, proj.bias, target)

