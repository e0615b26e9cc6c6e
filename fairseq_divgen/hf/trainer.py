"""``DivgenTrainer``: transformers' ``Trainer`` with one of this package's objectives as
its loss, LFD's frozen degenerative model, and the fused output path.

What it adds to ``Trainer(compute_loss_func=loss, callbacks=[loss])``:

- LFD stage 2 (Hong et al., arXiv 2309.12619): ``degenerative_model`` (a directory saved
  by stage 1 or a model) is loaded once when the trainer is built, checked against the
  main model (vocabulary, kind) and run without gradient on each batch
  (``degenerative.py``); ``LfdPoeLoss``'s ``eos_token_id`` defaults to the main model's
  ``config.eos_token_id``;
- ``fused_output=True``: in training, the loss takes the features entering the
  ``lm_head`` and its weight instead of the logits (``fused.py``, docs/fused_output.md),
  and projects them in the dtype autocast gave the head (mixed precision); refused under
  FSDP and DeepSpeed, which release a sharded weight after the forward;
- an encoder-decoder batch without ``decoder_input_ids`` gets them from the labels, as
  the model itself would make them had it received the labels (a ``compute_loss_func``
  takes the labels away from the model);
- the objective's own values (``nll_loss``, TaiLr's mean weight, the kept fractions,
  ...) join the training logs.

The loss is the objective's sum over ``num_items_in_batch``, like the
``compute_loss_func`` path (``base.py``), so gradient accumulation and
``average_tokens_across_devices`` work as in ``Trainer.compute_loss``.
"""

import contextlib
import math
from typing import Optional

import torch
from transformers import Trainer

from .base import DivgenLoss
from .degenerative import DegenerativeModel
from .fused import FusedOutput, output_layer
from .objectives import LfdPoeLoss
from .targets import check_aligned


def _eos_id(model) -> Optional[int]:
    eos = getattr(getattr(model, "config", None), "eos_token_id", None)
    if isinstance(eos, (list, tuple)):
        return eos[0] if len(eos) == 1 else None
    return eos


class DivgenTrainer(Trainer):
    """A ``Trainer`` whose loss is ``loss`` (a :class:`DivgenLoss`); see the module docstring."""

    loss_is_scaled_for_ga = True  # the loss is already over the whole accumulated batch

    def __init__(
        self,
        model=None,
        args=None,
        *,
        loss: DivgenLoss,
        degenerative_model=None,
        fused_output: bool = False,
        **kwargs,
    ):
        if not isinstance(loss, DivgenLoss):
            raise TypeError(
                "loss must be one of fairseq_divgen.hf's losses (e.g. TailrLoss()), "
                f"got {type(loss).__name__}"
            )
        if kwargs.get("compute_loss_func") is not None:
            raise ValueError(
                "DivgenTrainer takes its objective as loss=...; leave compute_loss_func out"
            )
        if model is None:
            raise ValueError("DivgenTrainer needs model= (model_init is not supported)")
        self._encoder_decoder = bool(getattr(model.config, "is_encoder_decoder", False))
        if loss.causal is not None and loss.causal == self._encoder_decoder:
            raise ValueError(
                f"{type(loss).__name__}(causal={loss.causal}) contradicts the model "
                f"(config.is_encoder_decoder={self._encoder_decoder}): leave causal=None"
            )
        self._check_degenerative(loss, model, degenerative_model)
        callbacks = list(kwargs.pop("callbacks", None) or [])
        if not any(c is loss for c in callbacks):
            callbacks.append(loss)
        super().__init__(
            model=model, args=args, compute_loss_func=loss, callbacks=callbacks, **kwargs
        )
        self.divgen_loss = loss
        self._fused = None
        if fused_output:
            sharded = getattr(self, "is_fsdp_enabled", False) or getattr(
                self, "is_deepspeed_enabled", False
            )
            if sharded:
                raise ValueError(
                    "fused_output=True cannot run with FSDP or DeepSpeed: the fused loss reads the "
                    "lm_head's weight after the model's forward, when a sharded model has "
                    "released it. Train with DDP (or one process) and fused_output=True, or "
                    "sharded with fused_output=False"
                )
            self._fused = FusedOutput()
        self.degenerative = None
        if isinstance(loss, LfdPoeLoss) and loss.uses_degenerative_model:
            self.degenerative = DegenerativeModel(degenerative_model, self.model, self.args.device)

    @staticmethod
    def _check_degenerative(loss, model, degenerative_model) -> None:
        if not isinstance(loss, LfdPoeLoss):
            if degenerative_model is not None:
                raise ValueError(
                    f"degenerative_model is LFD's (LfdPoeLoss), not "
                    f"{type(loss).__name__}'s: leave it out"
                )
            return
        if loss.uses_degenerative_model and degenerative_model is None:
            raise ValueError(
                f"LfdPoeLoss(degenerative_scale={loss.degenerative_scale}) needs "
                "degenerative_model=DIR (the directory stage 1 saved with trainer.save_model) or "
                "a model object"
            )
        if loss.eos_token_id is None and not loss.eos_in_product:
            eos = _eos_id(model)
            if eos is None:
                raise ValueError(
                    "LfdPoeLoss(eos_in_product=False) needs the end-of-sequence id, and "
                    f"model.config.eos_token_id is {model.config.eos_token_id!r}: pass "
                    "LfdPoeLoss(eos_token_id=ID), or eos_in_product=True"
                )
            loss.eos_token_id = eos

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """The objective's loss of a batch over ``num_items_in_batch`` (and the outputs)."""
        inputs = dict(inputs)
        labels = inputs.pop("labels", None)
        if labels is None:
            raise ValueError(
                "DivgenTrainer needs labels in every batch (-100 where there is no target): use "
                "a collator that makes them, e.g. DataCollatorForLanguageModeling(tokenizer, "
                "mlm=False) or DataCollatorForSeq2Seq(tokenizer, model=model)"
            )
        inner = self.accelerator.unwrap_model(model)
        if (
            self._encoder_decoder
            and inputs.get("decoder_input_ids") is None
            and inputs.get("decoder_inputs_embeds") is None
        ):
            inputs["decoder_input_ids"] = inner.prepare_decoder_input_ids_from_labels(labels=labels)
        training = model.training and torch.is_grad_enabled()
        batch = labels.size(0)
        autocast = None
        if self._fused is not None and training and self._fused.covers(inner, inputs, batch):
            outputs, source, autocast = self._fused.forward(model, output_layer(inner), inputs)
            shape, device = (source.h.size(0), source.weight.size(0)), source.h.device
        else:
            outputs = model(**inputs)
            logits = outputs["logits"]
            shape, device = logits.shape, logits.device
            source = logits.reshape(-1, logits.size(-1))
        target = self.divgen_loss.targets(labels.to(device), causal=not self._encoder_decoder)
        if math.prod(shape[:-1]) != target.numel():
            check_aligned(shape, target)  # raises, saying what to fix
        degenerative = None
        if self.degenerative is not None:
            with self.accelerator.autocast():  # mixed precision as the main model's forward
                degenerative = self.degenerative.source(inputs, self._fused, batch)
        with torch.autocast(device.type, dtype=autocast) if autocast else contextlib.nullcontext():
            loss = self.divgen_loss.loss(source, target, num_items_in_batch, training, degenerative)
        if degenerative is not None:
            self.degenerative.watch(degenerative)
        if (
            getattr(self.args, "average_tokens_across_devices", False)
            and num_items_in_batch is not None
        ):
            # as Trainer.compute_loss: the count is global, DDP averages the gradients
            scale = self.accelerator.num_processes // getattr(self, "get_tp_size", lambda: 1)()
            loss = loss * (scale if self.args.n_gpu <= 1 else self.args.n_gpu)
        return (loss, outputs) if return_outputs else loss

    def log(self, logs, *args, **kwargs):
        """Training logs get the objective's own means since the last log."""
        if "loss" in logs:
            logs.update(self.divgen_loss.pop_metrics())
        super().log(logs, *args, **kwargs)
