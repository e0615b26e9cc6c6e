"""The shape every criterion of this plugin shares, after fairseq's own
``label_smoothed_cross_entropy``: a config dataclass, ``forward`` (the batch's loss,
sample size and logging output), ``compute_loss`` (the objective, from ``losses/``),
``reduce_metrics``.

A criterion is its config (a :class:`DivgenConfig` subclass) plus ``compute_loss``,
which returns the objective's sums; it may add its own logged values
(``logging_extras``), change what is returned as the loss and its normaliser
(``loss_and_sample_size``), and extend ``reduce_metrics``. Everything else is here:
where the logits come from (``--fused-output``, ``--ignore-prefix-size``,
``loss_inputs.py``), ``--report-accuracy`` from the objective's own argmax count, and
fairseq's loss / nll_loss / ppl / accuracy meters.
"""

import math
from dataclasses import dataclass, field
from typing import Dict, Tuple

from fairseq.criterions import FairseqCriterion
from fairseq.criterions.label_smoothed_cross_entropy import LabelSmoothedCrossEntropyCriterion
from fairseq.dataclass import FairseqDataclass
from omegaconf import II
from torch import Tensor

from ..checks import check_range
from .loss_inputs import FUSED_OUTPUT_HELP, LossInputs

LN2 = math.log(2.0)


@dataclass
class DivgenConfig(FairseqDataclass):
    report_accuracy: bool = field(default=False, metadata={"help": "report accuracy metric"})
    ignore_prefix_size: int = field(default=0, metadata={"help": "Ignore first N tokens"})
    fused_output: bool = field(default=False, metadata={"help": FUSED_OUTPUT_HELP})
    sentence_avg: bool = II("optimization.sentence_avg")
    ddp_backend: str = II("distributed_training.ddp_backend")


@dataclass
class SmoothedDivgenConfig(DivgenConfig):
    label_smoothing: float = field(
        default=0.0, metadata={"help": "epsilon for label smoothing, 0 means no label smoothing"}
    )


class DivgenCriterion(FairseqCriterion):
    """A fairseq criterion whose loss is one of this package's objectives."""

    nll_key = "nll"  # the sum logged as nll_loss: the plain NLL of the model that generates

    def __init__(
        self,
        task,
        sentence_avg,
        label_smoothing=0.0,
        ignore_prefix_size=0,
        report_accuracy=False,
        fused_output=False,
        ddp_backend=None,
    ):
        super().__init__(task)
        check_range("--label-smoothing", label_smoothing, 0.0, 1.0)
        if fused_output and ddp_backend == "fully_sharded":
            raise ValueError(
                "--fused-output cannot run with --ddp-backend fully_sharded: the fused loss "
                "reads the output projection's weight after the model's forward, when a "
                "sharded model has already released it. Use --ddp-backend pytorch_ddp (or "
                "legacy_ddp / no_c10d) with --fused-output, or train fully_sharded without it."
            )
        self.sentence_avg = sentence_avg
        self.eps = label_smoothing
        self.ignore_prefix_size = ignore_prefix_size
        self.report_accuracy = report_accuracy
        self.fused_output = fused_output
        self.loss_inputs = LossInputs(fused_output, ignore_prefix_size)

    # -- what a criterion defines ---------------------------------------------------
    def compute_loss(self, model, source, target: Tensor, sample) -> Dict[str, Tensor]:
        """The objective's sums over the batch (``loss`` first; ``n_correct`` with
        ``--report-accuracy``): ``source`` as ``losses.chunked_loss`` takes it,
        ``target`` (B, T) after ``--ignore-prefix-size``."""
        raise NotImplementedError

    def loss_and_sample_size(self, sums, sample) -> Tuple[Tensor, object]:
        """The loss to differentiate and its normaliser: the objective's sum over
        ntokens (nsentences with ``--sentence-avg``)."""
        if self.sentence_avg:
            return sums["loss"], sample["target"].size(0)
        return sums["loss"], sample["ntokens"]

    def logging_extras(self, sums, target: Tensor, sample) -> Dict[str, object]:
        """The criterion's own summable logged values."""
        return {}

    def target_count(self, target: Tensor, sample):
        """Non-pad targets the loss saw: ntokens, unless a prefix was ignored."""
        if self.ignore_prefix_size > 0:
            return target.ne(self.padding_idx).sum().data
        return sample["ntokens"]

    # -- fairseq --------------------------------------------------------------------
    def forward(self, model, sample, reduce=True):
        """Loss, sample size and logging output of one batch."""
        source, target = self.loss_inputs(self, model, sample)
        sums = self.compute_loss(model, source, target, sample)
        loss, sample_size = self.loss_and_sample_size(sums, sample)
        logging_output = {
            "loss": loss.data,
            "nll_loss": sums[self.nll_key].data,
            "ntokens": sample["ntokens"],
            "nsentences": sample["target"].size(0),
            "sample_size": getattr(sample_size, "data", sample_size),
            **self.logging_extras(sums, target, sample),
        }
        if self.report_accuracy:
            logging_output["n_correct"] = sums["n_correct"].detach().long()
            logging_output["total"] = target.ne(self.padding_idx).sum().data
        return loss, sample_size, logging_output

    @classmethod
    def reduce_metrics(cls, logging_outputs) -> None:
        """fairseq's loss / nll_loss / ppl / accuracy meters (as label_smoothed_cross_entropy)."""
        LabelSmoothedCrossEntropyCriterion.reduce_metrics(logging_outputs)

    @staticmethod
    def logging_outputs_can_be_summed() -> bool:
        """Every logged value is a sum over the batch."""
        return True
