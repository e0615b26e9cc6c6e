"""``--criterion mixce``: MixCE's token-level objective as a fairseq criterion.

Zhang et al., "MixCE: Training Autoregressive Language Models by Mixing Forward and
Reverse Cross-Entropies", ACL 2023. ``--mixing-ratio`` is the authors'
``--mixing_ratio`` (eta; their scripts' default 0.5, searched over {0, 0.01, 0.1,
0.3, 0.5, 0.7, 0.9, 0.99, 1}); eta = 1 is exactly cross-entropy. The loss is the
weighted NLL summed over tokens over ``sample_size``, i.e. their ``reduction="mean"``.
"""
from dataclasses import dataclass, field

from fairseq.criterions import register_criterion
from fairseq.criterions.label_smoothed_cross_entropy import (
    LabelSmoothedCrossEntropyCriterion,
)
from fairseq.dataclass import FairseqDataclass
from fairseq.logging import metrics
from omegaconf import II

from ..losses import fused_mixce_loss, mixce_loss
from .accuracy import add_accuracy
from .checks import check_range
from .fused import FusedOutputMixin, fused_output_field


@dataclass
class MixceConfig(FairseqDataclass):
    mixing_ratio: float = field(
        default=0.5,
        metadata={
            "help": "eta in [0, 1]: each token's NLL is weighted by eta + (1 - eta) * p, "
            "p its (detached) model probability; 1 is exactly cross-entropy"
        },
    )
    report_accuracy: bool = field(default=False, metadata={"help": "report accuracy metric"})
    ignore_prefix_size: int = field(default=0, metadata={"help": "Ignore first N tokens"})
    fused_output: bool = fused_output_field()
    sentence_avg: bool = II("optimization.sentence_avg")


@register_criterion("mixce", dataclass=MixceConfig)
class MixceCriterion(FusedOutputMixin, LabelSmoothedCrossEntropyCriterion):
    """sum_t (eta + (1 - eta) p_t) * NLL_t, with p_t = q_t(y_t) detached."""

    def __init__(self, task, sentence_avg, mixing_ratio=0.5, ignore_prefix_size=0,
                 report_accuracy=False, fused_output=False):  # fmt: skip
        check_range("--mixing-ratio", mixing_ratio, 0.0, 1.0)
        super().__init__(task, sentence_avg, 0.0, ignore_prefix_size, report_accuracy)
        self.eta = mixing_ratio
        self.fused_output = fused_output

    def forward(self, model, sample, reduce=True):
        """Loss, sample size and logging outputs for one batch."""
        net_output = counted = None
        fused = self.fused_inputs(model, sample)
        if fused is not None:
            (loss, nll_loss, weight_sum), n_correct = fused_mixce_loss(
                *fused.projection, fused.target, self.eta, self.padding_idx, self.report_accuracy
            )
            target, counted = fused.target, (n_correct, fused.target)
        else:
            net_output = model(**sample["net_input"])
            lprobs, target = self.get_lprobs_and_target(model, net_output, sample)
            loss, nll_loss, weight_sum = mixce_loss(lprobs, target, self.eta, self.padding_idx)
        ntokens = sample["ntokens"]
        nsentences = sample["target"].size(0)
        sample_size = nsentences if self.sentence_avg else ntokens
        count = target.ne(self.padding_idx).sum().data if self.ignore_prefix_size > 0 else ntokens
        logging_output = {
            "loss": loss.data,
            "nll_loss": nll_loss.data,
            "ntokens": ntokens,
            "nsentences": nsentences,
            "sample_size": sample_size,
            "mixce_weight_sum": weight_sum.data,
            "mixce_weight_count": count,
        }
        if self.report_accuracy:
            add_accuracy(self, model, net_output, sample, logging_output, counted)
        return loss, sample_size, logging_output

    @classmethod
    def reduce_metrics(cls, logging_outputs) -> None:
        """Fairseq's loss / nll_loss / ppl / accuracy, plus the mean token weight."""
        super().reduce_metrics(logging_outputs)
        total = sum(log.get("mixce_weight_sum", 0) for log in logging_outputs)
        count = sum(log.get("mixce_weight_count", 0) for log in logging_outputs)
        if count > 0:
            metrics.log_scalar("mixce_weight", total / count, count, round=3)
