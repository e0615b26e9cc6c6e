"""What every objective of the transformers adapter shares: a ``compute_loss_func`` for
``transformers.Trainer`` that is also a ``TrainerCallback``.

A loss object is called as ``loss(outputs, labels, num_items_in_batch)``, the signature
``Trainer(compute_loss_func=...)`` calls: it aligns the labels with the logits
(``targets.py``: shifted for a causal LM, as transformers does; -100 is ignored), runs its
objective from ``fairseq_divgen.losses`` (pure torch, the same code as the fairseq
criterions) and divides the objective's sum by ``num_items_in_batch``, the number of
labels of the whole accumulated batch that transformers counts. Summed over the k
micro-batches of an update, that is the loss of one batch k times larger.

As a callback it keeps the trainer's ``TrainerState``, for the objectives that depend on
the update count as their fairseq criterions do (warm-ups, loss truncation's per-update
history, ENT's start iteration). fairseq's "updates completed" is ``state.global_step``
at the forward (every micro-batch of an update sees the same count). Pass the loss both
ways, ``Trainer(compute_loss_func=loss, callbacks=[loss])``, or use ``DivgenTrainer``.

"Training" is a forward whose logits require a gradient, as in ``Trainer.training_step``
(evaluation runs under ``torch.no_grad()``); the fairseq criterions' validation rules
apply otherwise (e.g. TaiLr's gamma without warm-up, no truncation for ENT).
"""

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar, Dict, Optional

import torch
from torch import Tensor
from transformers import TrainerCallback

from ..checks import check_non_negative
from .targets import (
    IGNORE_INDEX,
    aligned_targets,
    causal_from_outputs,
    check_aligned,
    target_count,
)

logger = logging.getLogger(__name__)


@dataclass(eq=False, kw_only=True)
class DivgenLoss(TrainerCallback):
    """An objective of this package as transformers' ``compute_loss_func``.

    ``report_accuracy`` and ``ignore_prefix_size`` are the fairseq flags of every
    criterion (the prefix's targets are ignored, as -100 labels would be). ``causal``:
    True shifts the labels (causal LM), False does not (encoder-decoder), None decides
    from the outputs' class (``*CausalLM*`` or ``*Seq2SeqLM*``).
    """

    criterion: ClassVar[str] = ""  # the fairseq criterion with the same flags
    nll_key: ClassVar[str] = "nll"  # the sum logged as nll_loss

    report_accuracy: bool = False
    ignore_prefix_size: int = 0
    causal: Optional[bool] = None

    def __post_init__(self):
        self.check()
        self._state = None  # the trainer's TrainerState, once training has begun
        self._totals: Dict[str, Tensor] = {}

    # -- what an objective defines -------------------------------------------------
    def check(self) -> None:
        """Raise a ValueError naming the argument whose value is out of range."""
        check_non_negative("ignore_prefix_size", self.ignore_prefix_size)

    def sums(
        self, source, target: Tensor, pad: int, training: bool, degenerative=None
    ) -> Dict[str, Tensor]:
        """The objective's sums (``loss`` first) over ``source`` (B * T rows) and ``target``
        (B, T), whose ignored entries are ``pad`` (-100)."""
        raise NotImplementedError

    def denominator(self, sums: Dict[str, Tensor], count):
        """What the summed loss is divided by: ``num_items_in_batch`` (``count``)."""
        return count

    def extras(self, sums: Dict[str, Tensor], target: Tensor) -> Dict[str, Tensor]:
        """The objective's own summable logged values of a training batch."""
        return {}

    def summary(self, totals: Dict[str, float]) -> Dict[str, float]:
        """Logged means from the totals since the last log (default: per target token)."""
        tokens = totals.get("tokens", 0.0)
        return {k: v / tokens for k, v in totals.items() if k != "tokens"} if tokens else {}

    # -- the trainer's update count ------------------------------------------------
    def on_train_begin(self, args, state, control, **kwargs):
        """Keep the trainer's state (its ``global_step`` is the update count)."""
        self._state = state

    def on_step_begin(self, args, state, control, **kwargs):
        """Keep the trainer's state (a resumed run's is a new object)."""
        self._state = state

    def num_updates(self, why: str) -> int:
        """Updates the trainer has completed (``state.global_step``); ``why`` names the
        setting that needs it, for the error raised when no trainer state was seen."""
        if self._state is None:
            raise ValueError(
                f"{type(self).__name__}: {why} needs the trainer's update count, which a "
                "compute_loss_func does not receive: pass the loss as a callback too, "
                "Trainer(..., compute_loss_func=loss, callbacks=[loss]), or train with "
                "DivgenTrainer(..., loss=loss)"
            )
        return int(self._state.global_step)

    # -- transformers ----------------------------------------------------------------
    def __call__(self, outputs, labels: Tensor, num_items_in_batch=None) -> Tensor:
        """The loss of a batch from the model's outputs and the labels (-100 ignored),
        summed and divided by ``num_items_in_batch`` (this batch's targets if None)."""
        if labels is None:
            raise ValueError(f"{type(self).__name__} needs the batch's labels (got None)")
        logits = outputs["logits"] if isinstance(outputs, Mapping) else outputs[0]
        causal = self.causal if self.causal is not None else causal_from_outputs(outputs)
        if causal is None:
            raise ValueError(
                f"{type(self).__name__} cannot tell from {type(outputs).__name__} whether the "
                "model is a causal LM (labels shifted) or an encoder-decoder: pass causal=True "
                "or causal=False"
            )
        target = self.targets(labels.to(logits.device), causal)
        check_aligned(logits.shape, target)
        training = torch.is_grad_enabled() and logits.requires_grad
        return self.loss(logits.reshape(-1, logits.size(-1)), target, num_items_in_batch, training)

    def targets(self, labels: Tensor, causal: bool) -> Tensor:
        """The (B, T) targets of the logits (``targets.aligned_targets``)."""
        return aligned_targets(labels, causal, self.ignore_prefix_size)

    def loss(
        self, source, target: Tensor, num_items_in_batch, training: bool, degenerative=None
    ) -> Tensor:
        """The objective's sum over ``source`` (logits (B * T, V), or a ``Projection``)
        divided by ``num_items_in_batch``; the sums of a training batch are kept for logging."""
        sums = self.sums(source, target, IGNORE_INDEX, training, degenerative)
        count = target_count(target) if num_items_in_batch is None else num_items_in_batch
        if torch.is_tensor(count):
            count = count.to(sums["loss"].device)
        loss = sums["loss"] / _at_least_one(self.denominator(sums, count))
        if training:
            self._accumulate(sums, target)
        return loss

    # -- logging ---------------------------------------------------------------------
    def _accumulate(self, sums, target) -> None:
        values = {"tokens": target_count(target), "nll_loss": sums[self.nll_key]}
        if self.report_accuracy:
            values["accuracy"] = sums["n_correct"]
        values.update(self.extras(sums, target))
        for key, value in values.items():
            value = torch.as_tensor(value).detach().double()
            self._totals[key] = self._totals[key] + value if key in self._totals else value

    def pop_metrics(self) -> Dict[str, float]:
        """Means of the training batches since the last call (nll_loss in nats per
        token, and the objective's own values); resets the totals."""
        totals = {k: float(v) for k, v in self._totals.items()}
        self._totals = {}
        return self.summary(totals) if totals else {}


def _at_least_one(count):
    """The divisor, at least 1: a batch without targets has loss 0, not 0 / 0."""
    return count.clamp(min=1) if torch.is_tensor(count) else max(count, 1)
