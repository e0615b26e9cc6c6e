"""LFD's frozen degenerative model in transformers: loaded once, checked against the main
model before training, and run without gradient on each batch of stage 2.

Hong et al., "Learning to Diversify Neural Text Generation via Degenerative Model"
(arXiv 2309.12619). Stage 2 trains the main model as a product of experts with the
model of stage 1 (``TruncatedCELoss``), frozen. This holder is what ``DivgenTrainer``
keeps of it:

- a directory written by ``save_pretrained`` / ``Trainer.save_model`` (loaded with
  ``AutoModelForCausalLM`` or ``AutoModelForSeq2SeqLM``, as the main model is, from local
  files only) or a model object, loaded or taken when the trainer is built;
- a vocabulary that differs from the main model's, or an encoder-decoder paired with a
  causal LM, is a ValueError there, before any data is read;
- it is put on the trainer's device and in the main model's dtype, in eval mode with
  ``requires_grad_(False)``, and runs under ``torch.no_grad()`` and, with mixed precision
  (``bf16`` / ``fp16``), under the autocast that accelerate gives the main model's forward;
- it is an attribute of the trainer, never of the main model: ``Trainer.save_model`` and
  the checkpoints hold the main model only, and accelerate never sees it, so DDP, FSDP and
  DeepSpeed never wrap it;
- whether its logits were finite is recorded on the device at each step and read back
  without waiting (at once on the CPU, on a GPU at a later step): a frozen model whose
  forward overflows (e.g. in half precision) stops training with an error naming it,
  instead of NaN losses.
"""

import os
from typing import Optional, Union

import torch
import torch.nn as nn

from ..losses import FrozenLogits
from ..losses.finite import FiniteWatch
from .fused import FusedOutput, output_layer, projection_of


def _vocabulary(model: nn.Module) -> Optional[int]:
    head = output_layer(model)
    weight = getattr(head, "weight", None)
    if weight is not None:
        return weight.size(0)
    return getattr(getattr(model, "config", None), "vocab_size", None)


def _float_dtype(model: nn.Module) -> torch.dtype:
    for p in model.parameters():
        if p.is_floating_point():
            return p.dtype
    return torch.float32


def _is_encoder_decoder(model: nn.Module) -> bool:
    return bool(getattr(getattr(model, "config", None), "is_encoder_decoder", False))


def load(path: Union[str, os.PathLike], encoder_decoder: bool) -> nn.Module:
    """A model saved by ``save_pretrained`` in ``path`` (local files only)."""
    if not os.path.isdir(path):
        raise ValueError(
            f"degenerative_model: {path} is not a directory; pass the directory stage 1 "
            "saved (trainer.save_model(DIR) with TruncatedCELoss), or a model object"
        )
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

    auto = AutoModelForSeq2SeqLM if encoder_decoder else AutoModelForCausalLM
    return auto.from_pretrained(path, local_files_only=True)


class DegenerativeModel:
    """The frozen degenerative model of one trainer (module docstring)."""

    def __init__(self, model_or_path, main_model: nn.Module, device):
        encoder_decoder = _is_encoder_decoder(main_model)
        if isinstance(model_or_path, (str, os.PathLike)):
            self.name = str(model_or_path)
            model = load(model_or_path, encoder_decoder)
        elif isinstance(model_or_path, nn.Module):
            self.name, model = type(model_or_path).__name__, model_or_path
        else:
            raise ValueError(
                "degenerative_model must be a directory saved by stage 1 or a torch.nn.Module, "
                f"got {type(model_or_path).__name__}"
            )
        if model is main_model:
            raise ValueError(
                "degenerative_model is the main model itself: pass the frozen "
                "stage-1 model (a separate object or directory)"
            )
        if _is_encoder_decoder(model) != encoder_decoder:
            kinds = {True: "an encoder-decoder", False: "a causal LM"}
            raise ValueError(
                f"degenerative_model ({self.name}) is {kinds[not encoder_decoder]} but the main "
                f"model is {kinds[encoder_decoder]}: LFD needs both to score the same targets "
                "from the same inputs; train the degenerative model with the main model's kind"
            )
        ours, theirs = _vocabulary(main_model), _vocabulary(model)
        if ours is None or theirs is None or ours != theirs:
            raise ValueError(
                f"degenerative_model ({self.name}) has a vocabulary of {theirs} symbols and the "
                f"main model {ours}: the product of experts adds their logits symbol by symbol, "
                "so both must use the same tokenizer; train the degenerative model (stage 1, "
                "TruncatedCELoss) with the main model's tokenizer and vocabulary size"
            )
        model.to(device=device, dtype=_float_dtype(main_model))
        model.eval()
        model.requires_grad_(False)
        self.model = model
        self._finite = FiniteWatch()

    def source(self, inputs, fused: Optional[FusedOutput], batch: int) -> FrozenLogits:
        """Its logits of the batch ``inputs`` (the main model's, without labels), as
        ``losses.FrozenLogits``: made a chunk of rows at a time from its features and head
        when ``fused`` covers it, else its full logits."""
        self.raise_if_not_finite()
        self.model.eval()  # the main model's .train() never reaches it, but a user's might
        with torch.no_grad():
            if fused is not None and fused.covers(
                self.model, inputs, batch, "the degenerative model"
            ):
                frozen = FrozenLogits(projection_of(self.model, inputs))
            else:
                logits = self.model(**inputs)["logits"]
                frozen = FrozenLogits(logits.reshape(-1, logits.size(-1)))
        return frozen

    def watch(self, frozen: FrozenLogits) -> None:
        """After the loss has made every chunk of ``frozen``: record whether its logits were
        finite (read at once on the CPU, on a GPU at a later step without waiting)."""
        self._finite.record(frozen.finite, frozen.dtype)
        self.raise_if_not_finite()

    def raise_if_not_finite(self) -> None:
        """Raise if an earlier batch's degenerative logits were not all finite."""
        dtype = self._finite.failed()
        if dtype is not None:
            raise FloatingPointError(
                f"the degenerative model ({self.name}) gave non-finite logits in {dtype}: "
                "check it in float32, or train stage 2 in float32 / bf16"
            )
