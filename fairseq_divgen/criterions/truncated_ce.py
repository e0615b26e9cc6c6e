"""``--criterion truncated_ce``: stage 1 of LFD, train the degenerative model.

LFD: Hong et al., "Learning to Diversify Neural Text Generation via Degenerative
Model" (arXiv 2309.12619). Each batch keeps only the ``ceil(R * N)`` tokens with
the lowest NLL (per forward batch and per worker), so the model amplifies the
easy, generic patterns of the data.
"""

from dataclasses import dataclass, field

import torch
from fairseq.criterions import register_criterion
from fairseq.logging import metrics

from ..checks import check_non_negative, check_range
from ..losses import truncated_nll_loss
from ..update_count import trainer_num_updates
from .base import LN2, DivgenConfig, DivgenCriterion


@dataclass
class TruncatedCEConfig(DivgenConfig):
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


@register_criterion("truncated_ce", dataclass=TruncatedCEConfig)
class TruncatedCrossEntropyCriterion(DivgenCriterion):
    """Cross-entropy over the easiest ``truncation_ratio`` of each batch's tokens.

    In training, ``loss`` is the objective in force: plain cross-entropy during the
    warm-up, then the truncated sum over ``sample_size`` = kept tokens. In validation
    (and fairseq-validate) ``loss`` is always the truncated loss per kept token, so
    ``--best-checkpoint-metric loss`` and ``--patience`` compare one quantity before and
    after the warm-up. ``nll_loss`` is always the full-batch NLL; ``trunc_loss`` the
    truncated loss.
    """

    def __init__(
        self,
        task,
        sentence_avg,
        truncation_ratio=0.5,
        truncation_warmup_updates=0,
        ignore_prefix_size=0,
        report_accuracy=False,
        fused_output=False,
        ddp_backend=None,
    ):
        check_range("--truncation-ratio", truncation_ratio, 0.0, 1.0, low_open=True)
        check_non_negative("--truncation-warmup-updates", truncation_warmup_updates)
        super().__init__(
            task, sentence_avg, 0.0, ignore_prefix_size, report_accuracy, fused_output, ddp_backend
        )
        self.truncation_ratio = truncation_ratio
        self.warmup_updates = truncation_warmup_updates

    def compute_loss(self, model, source, target, sample):
        """The truncated sums; plain cross-entropy (no ranking) during the warm-up."""
        # The ranking means nothing at initialisation. Validation always truncates.
        self._warming_up = model.training and trainer_num_updates() < self.warmup_updates
        ratio = 1.0 if self._warming_up else self.truncation_ratio
        # The host knows the non-pad count unless a prefix was cut off; ntokens bounds it.
        count = sample["ntokens"] if self.ignore_prefix_size == 0 else None
        return truncated_nll_loss(
            source,
            target,
            ratio,
            self.padding_idx,
            count,
            max_tokens=sample["ntokens"],
            accuracy=self.report_accuracy,
        )

    def loss_and_sample_size(self, sums, sample):
        """Plain CE over ntokens while warming up, else the truncated sum over the kept tokens."""
        loss, size = (
            (sums["nll"], sample["ntokens"]) if self._warming_up else (sums["loss"], sums["kept"])
        )
        return loss, sample["target"].size(0) if self.sentence_avg else size

    def logging_extras(self, sums, target, sample):
        """The truncated loss and the number of kept tokens."""
        kept = sums["kept"]
        return {
            "trunc_loss": sums["loss"].data,
            "kept_tokens": kept.data if torch.is_tensor(kept) else kept,
        }

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
