"""Which fairseq models the fused output path covers, and their output layer.

The fused path (``--fused-output``, ``losses/chunked.py``) runs the model with
``features_only=True`` and applies the output projection itself, a chunk of tokens at
a time. That is exact when the decoder's output layer is fairseq's transformer one,
a plain ``nn.Linear`` named ``output_projection`` (tied to the input embedding or not,
with or without bias) and no adaptive softmax: fairseq's transformer encoder-decoder
models and ``transformer_lm``.
"""

import inspect
from typing import Optional

import torch.nn as nn


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside fairseq's DDP wrappers (``ModuleProxyWrapper`` > DDP > model)."""
    while isinstance(getattr(model, "module", None), nn.Module):
        model = model.module
    return model


def _takes(function, name: str) -> bool:
    params = inspect.signature(function).parameters.values()
    return any(p.name == name or p.kind is p.VAR_KEYWORD for p in params)


def uncovered_reason(model: nn.Module) -> Optional[str]:
    """Why the fused output path cannot run ``model`` exactly; None if it can."""
    # imported here: importing fairseq registers this package, whose criterions import this module
    from fairseq.models.transformer import TransformerDecoderBase

    model = unwrap(model)
    decoder = getattr(model, "decoder", None)
    if decoder is None:
        return "it has no decoder"
    if getattr(decoder, "adaptive_softmax", None) is not None:
        return "its decoder has an adaptive softmax (--adaptive-softmax-cutoff)"
    if not isinstance(getattr(decoder, "output_projection", None), nn.Linear):
        return f"its decoder ({type(decoder).__name__}) has no output_projection (nn.Linear)"
    if getattr(type(decoder), "output_layer", None) is not TransformerDecoderBase.output_layer:
        return f"its decoder ({type(decoder).__name__}) has its own output_layer"
    if not (_takes(model.forward, "features_only") and _takes(decoder.forward, "features_only")):
        return "its forward takes no features_only"
    return None


def output_projection(model: nn.Module) -> nn.Linear:
    """The decoder's output projection of a covered model."""
    return unwrap(model).decoder.output_projection
