"""``--criterion truncated_ce``: stage 1 of LFD, train the degenerative model.

LFD: Hong et al., "Learning to Diversify Neural Text Generation via Degenerative
Model" (arXiv 2309.12619). Each batch keeps only the ``ceil(R * N)`` tokens with
the lowest NLL (per forward batch and per worker), so the model amplifies the
easy, generic patterns of the data.
"""
from dataclasses import dataclass, field

import torch
from fairseq.criterions import register_criterion
from fairseq.criterions.label_smoothed_cross_entropy import (
    LabelSmoothedCrossEntropyCriterion,
)
from fairseq.dataclass import FairseqDataclass
from fairseq.logging import metrics
from omegaconf import II

from ..losses import fused_truncated_nll_loss, truncated_nll_loss
from ..update_count import trainer_num_updates
from .accuracy import add_accuracy
from .checks import check_non_negative, check_range
from .fused import FusedOutputMixin, fused_output_field

LN2 = 0.6931471805599453


@dataclass
class TruncatedCEConfig(FairseqDataclass):
    truncation_ratio: float = field(
        default=0.5,
        metadata={
            "help": "R in (0, 1]: fraction of each batch's non-pad tokens (those "
            "with the lowest NLL) that the loss keeps; 1 is plain cross-entropy"
        },
    )
    truncation_warmup_updates: int = field(
        default=0,
        metadata={"help": "train with plain cross-entropy for the first N updates"},
    )
    report_accuracy: bool = field(
        default=False, metadata={"help": "report accuracy metric"}
    )
    ignore_prefix_size: int = field(
        default=0, metadata={"help": "Ignore first N tokens"}
    )
    fused_output: bool = fused_output_field()
    sentence_avg: bool = II("optimization.sentence_avg")


@register_criterion("truncated_ce", dataclass=TruncatedCEConfig)
class TruncatedCrossEntropyCriterion(FusedOutputMixin, LabelSmoothedCrossEntropyCriterion):
    """Cross-entropy over the easiest ``truncation_ratio`` of each batch's tokens."""

    def __init__(
        self,
        task,
        sentence_avg,
        truncation_ratio=0.5,
        truncation_warmup_updates=0,
        ignore_prefix_size=0,
        report_accuracy=False,
        fused_output=False,
    ):
        check_range("--truncation-ratio", truncation_ratio, 0.0, 1.0, low_open=True)
        check_non_negative("--truncation-warmup-updates", truncation_warmup_updates)
        super().__init__(task, sentence_avg, 0.0, ignore_prefix_size, report_accuracy)
        self.truncation_ratio = truncation_ratio
        self.warmup_updates = truncation_warmup_updates
        self.fused_output = fused_output

    def forward(self, model, sample, reduce=True):
        """Loss, sample size and logging outputs for one batch.

        In training, ``loss`` is the objective in force: plain cross-entropy during
        the warm-up, then the truncated sum over ``sample_size`` = kept tokens. In
        validation (and fairseq-validate) ``loss`` is always the truncated loss per
        kept token, so ``--best-checkpoint-metric loss`` and ``--patience`` compare
        one quantity before and after the warm-up. ``nll_loss`` is always the
        full-batch NLL; ``trunc_loss`` the truncated loss.
        """
        ntokens = sample["ntokens"]
        nsentences = sample["target"].size(0)
        # The host knows the non-pad count unless a prefix was cut off.
        count = ntokens if self.ignore_prefix_size == 0 else None
        # The ranking means nothing at initialisation: plain CE (no sort) while
        # warming up. Validation always reports the truncated loss.
        warming_up = model.training and trainer_num_updates() < self.warmup_updates
        ratio = 1.0 if warming_up else self.truncation_ratio
        net_output = counted = None
        fused = self.fused_inputs(model, sample)
        if fused is not None:
            # ntokens also bounds the count after a prefix: the gradient pass's size
            (trunc_loss, nll_loss, kept), n_correct = fused_truncated_nll_loss(
                *fused.projection, fused.target, ratio, self.padding_idx, count,
                max_tokens=ntokens, accuracy=self.report_accuracy,
            )  # fmt: skip
            counted = (n_correct, fused.target)
        else:
            net_output = model(**sample["net_input"])
            lprobs, target = self.get_lprobs_and_target(model, net_output, sample)
            trunc_loss, nll_loss, kept = truncated_nll_loss(
                lprobs, target, ratio, self.padding_idx, count
            )
        if warming_up:
            loss, size = nll_loss, ntokens
        else:
            loss, size = trunc_loss, kept
        sample_size = nsentences if self.sentence_avg else size
        logging_output = {
            "loss": loss.data,
            "nll_loss": nll_loss.data,
            "trunc_loss": trunc_loss.data,
            "kept_tokens": kept.data if torch.is_tensor(kept) else kept,
            "ntokens": ntokens,
            "nsentences": nsentences,
            "sample_size": sample_size.data if torch.is_tensor(sample_size) else sample_size,
        }
        if self.report_accuracy:
            add_accuracy(self, model, net_output, sample, logging_output, counted)
        return loss, sample_size, logging_output

    @classmethod
    def reduce_metrics(cls, logging_outputs) -> None:
        """Fairseq's loss / nll_loss / ppl / accuracy, plus the truncated loss and
        the fraction of tokens kept."""
        super().reduce_metrics(logging_outputs)
        trunc = sum(log.get("trunc_loss", 0) for log in logging_outputs)
        kept = sum(log.get("kept_tokens", 0) for log in logging_outputs)
        ntokens = sum(log.get("ntokens", 0) for log in logging_outputs)
        if kept > 0:
            metrics.log_scalar("trunc_loss", trunc / kept / LN2, kept, round=3)
        if ntokens > 0:
            metrics.log_scalar("kept_ratio", kept / ntokens, ntokens, round=3)
