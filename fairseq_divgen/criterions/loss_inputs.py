"""Where a criterion's logits come from: the model's own output layer, or (with
``--fused-output``) its decoder features and output projection, for the fused path.

With ``--fused-output`` the model runs with ``features_only=True`` and the loss applies
the output projection itself, a chunk of tokens at a time, outside the model's forward.
Torch's DistributedDataParallel (fairseq's default ``--ddp-backend pytorch_ddp``) must
still see the projection's weight used by that forward: with
``--find-unused-parameters`` it marks every parameter the forward's outputs do not
reach as unused, and a gradient arriving later for it is an error ("Expected to mark a
variable ready only once"). So the first fused call registers a forward hook on the
model object (a torch API; fairseq's code is unchanged) that, whenever the model is
called with ``features_only=True``, passes its features through :class:`_UsesOutputLayer`:
the same tensor, whose autograd node takes the projection's weight and bias as inputs
(and gives them no gradient of its own). DDP's search then reaches them; the weight gets
its one gradient from the loss. Without DDP, or without that flag, the node changes
nothing.
"""

import logging
from typing import Optional, Tuple

import torch
from torch import Tensor

from ..losses import LogProbs, Projection
from ..output_layer import output_projection, uncovered_reason, unwrap

logger = logging.getLogger(__name__)

FUSED_OUTPUT_HELP = (
    "compute the output projection and the loss together, a chunk of tokens at a time, so "
    "that the (tokens, vocabulary) logits never exist at once (same loss and gradients, less "
    "memory); transformer models (an output_projection, no adaptive softmax) only, others "
    "train unfused with a warning"
)


class _UsesOutputLayer(torch.autograd.Function):
    """``features`` unchanged, with the output layer's parameters as inputs of its node."""

    @staticmethod
    def forward(ctx, features, weight, bias):
        return features.view_as(features)

    @staticmethod
    def backward(ctx, grad):
        return grad, None, None


def _features_use_output_layer(module, args, kwargs, output):
    """Forward hook: with ``features_only=True``, tie the output layer into the features."""
    if not kwargs.get("features_only", False):
        return None
    features, extra = output
    proj = output_projection(module)
    return _UsesOutputLayer.apply(features, proj.weight, proj.bias), extra


class LossInputs:
    """Per criterion: the model's covered-or-not verdict (found once per model), the
    fallback warning (once), and the batch's loss source."""

    def __init__(self, fused_output: bool, ignore_prefix_size: int):
        self.fused_output = fused_output
        self.ignore_prefix_size = ignore_prefix_size
        self._reasons = {}
        self._warned = False

    def _reason(self, model) -> Optional[str]:
        key = id(model)
        if key not in self._reasons:
            self._reasons[key] = uncovered_reason(model)
        return self._reasons[key]

    def __call__(self, criterion, model, sample) -> Tuple[object, Tensor]:
        """``(source, target)``: the loss source of the batch (:class:`Projection`,
        logits or :class:`LogProbs`, B * T rows) and its (B, T) targets, after
        ``--ignore-prefix-size``."""
        reason = self._reason(model)
        if self.fused_output and reason is not None and not self._warned:
            self._warned = True
            logger.warning(
                f"--fused-output: {type(criterion).__name__} computes the unfused loss for "
                f"{type(model).__name__}: {reason}"
            )
        p = self.ignore_prefix_size
        if self.fused_output and reason is None:
            inner = unwrap(model)
            if getattr(inner, "_divgen_output_hook", None) is None:
                inner._divgen_output_hook = inner.register_forward_hook(
                    _features_use_output_layer, with_kwargs=True
                )
            features, extra = model(**sample["net_input"], features_only=True)
            target = model.get_targets(sample, (features, extra))[:, p:]
            proj = output_projection(model)
            h = features[:, p:].reshape(-1, features.size(-1))
            return Projection(h, proj.weight, proj.bias), target
        net_output = model(**sample["net_input"])
        target = model.get_targets(sample, net_output)[:, p:]
        if reason is None:  # the plain output layer's logits: the loss normalises them
            scores = net_output[0]
        else:
            scores = model.get_normalized_probs(net_output, log_probs=True)
        scores = scores[:, p:].reshape(-1, scores.size(-1))
        return (scores if reason is None else LogProbs(scores)), target
