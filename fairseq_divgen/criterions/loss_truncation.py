"""``--criterion loss_truncation``: loss truncation as a fairseq criterion.

Kang and Hashimoto, "Improved Natural Language Generation via Loss Truncation",
ACL 2020. The flags are the arguments of the authors' ``LossDropper(dropc,
min_count, recompute)`` with its defaults (0.4, 10000, 10000): plain MLE until
``min_count`` sequence losses have been seen (the hot start), then sequences whose
mean token NLL exceeds the (1 - dropc) quantile of the last ``recompute`` sequence
losses are dropped; the quantile is recomputed every ``recompute`` new losses.

Several workers share one history: the sequence losses of every micro-batch are
gathered from all data-parallel workers (a fixed-size all-gather, padded to the
largest possible batch, so no host synchronisation) and enter the history in the
order (micro-batch, worker) at the start of the next update, so the cutoff of an
update depends only on the losses of earlier updates: two workers train exactly
as one worker with --update-freq 2. fairseq keeps a criterion's state in its
checkpoints only when the criterion has parameters (and then wraps it in DDP and
hands them to the optimizer), so the history is not saved: a resumed run rebuilds
it, with a warning, as the run began: plain MLE until ``min_count`` new sequence
losses have been seen, then truncation against the rebuilt history. The loss is the token sum over the kept sequences over
``sample_size`` = ntokens (all tokens, as loss_dropper's mean over all examples with
dropped ones zeroed). Validation reports the untruncated objective as ``loss`` and
the fraction of sequences within the cutoff.
"""
import logging
import math
from dataclasses import dataclass, field
from typing import Optional

import torch
from fairseq.criterions import register_criterion
from fairseq.criterions.label_smoothed_cross_entropy import (
    LabelSmoothedCrossEntropyCriterion,
    LabelSmoothedCrossEntropyCriterionConfig,
)
from fairseq.distributed import utils as distributed_utils
from fairseq.logging import metrics
from omegaconf import II

from ..losses import LossHistory, fused_loss_truncation_loss, loss_truncation_loss
from ..update_count import trainer_num_updates
from .accuracy import add_accuracy
from .checks import check_range
from .fused import FusedOutputMixin, fused_output_field

logger = logging.getLogger(__name__)
LN2 = 0.6931471805599453


@dataclass
class LossTruncationConfig(LabelSmoothedCrossEntropyCriterionConfig):
    dropc: float = field(
        default=0.4,
        metadata={"help": "fraction in [0, 1) of sequences to drop: those above the (1 - dropc) "
                  "quantile of recent sequence losses; 0 is exactly MLE"},
    )  # fmt: skip
    min_count: int = field(
        default=10000,
        metadata={"help": "plain MLE until this many sequence losses have been seen (hot start)"},
    )
    recompute: int = field(
        default=10000,
        metadata={"help": "the quantile is taken over the last N sequence losses and recomputed "
                  "every N new ones (N >= 1)"},
    )  # fmt: skip
    fused_output: bool = fused_output_field()
    # The largest batch a worker can hold, which fixes the size of the all-gather.
    max_sentences: Optional[int] = II("dataset.batch_size")
    max_tokens: Optional[int] = II("dataset.max_tokens")


@register_criterion("loss_truncation", dataclass=LossTruncationConfig)
class LossTruncationCriterion(FusedOutputMixin, LabelSmoothedCrossEntropyCriterion):
    """Label-smoothed cross-entropy over the sequences at or below a loss quantile."""

    def __init__(
        self,
        task,
        sentence_avg,
        label_smoothing,
        dropc=0.4,
        min_count=10000,
        recompute=10000,
        ignore_prefix_size=0,
        report_accuracy=False,
        max_sentences=None,
        max_tokens=None,
        fused_output=False,
    ):
        check_range("--dropc", dropc, 0.0, 1.0, high_open=True)
        if not (isinstance(min_count, int) and min_count >= 0):
            raise ValueError(f"--min-count must be an integer >= 0, got {min_count}")
        if not (isinstance(recompute, int) and recompute >= 1):
            raise ValueError(f"--recompute must be an integer >= 1, got {recompute}")
        check_range("--label-smoothing", label_smoothing, 0.0, 1.0)
        super().__init__(task, sentence_avg, label_smoothing, ignore_prefix_size, report_accuracy)
        self.history = LossHistory(dropc, min_count, recompute)
        bounds = [b for b in (max_sentences, max_tokens) if b]
        self.max_sentences = min(bounds) if bounds else None  # every sentence has >= 1 token
        self._checked_resume = False
        self.fused_output = fused_output

    def _check_resume(self, num_updates: int) -> None:
        if self._checked_resume:
            return
        self._checked_resume = True
        if num_updates > 0:
            logger.warning(
                "loss_truncation: training resumes at update %d; fairseq checkpoints do "
                "not keep the loss history, so it is rebuilt: plain MLE until %d new "
                "sequence losses have been seen (--min-count), then truncation",
                num_updates, self.history.min_count,
            )  # fmt: skip

    # -- distributed ------------------------------------------------------------
    def _all_workers(self, losses):
        """The sequence losses of this micro-batch on every data-parallel worker, in
        worker order, NaN-padded to a fixed size (1-D)."""
        group = distributed_utils.get_data_parallel_group()
        if distributed_utils.get_world_size(group) <= 1:
            return losses
        if self.max_sentences is None:
            raise ValueError("--criterion loss_truncation with several workers needs "
                             "--max-tokens or --batch-size (they bound the batch it gathers)")  # fmt: skip
        if losses.numel() > self.max_sentences:
            raise RuntimeError(f"loss_truncation: a batch of {losses.numel()} sequences exceeds "
                               f"the bound {self.max_sentences} (--batch-size / --max-tokens)")  # fmt: skip
        padded = losses.new_full((self.max_sentences,), math.nan)
        padded[: losses.numel()] = losses
        return distributed_utils.all_gather(padded, group, return_tensor=True).reshape(-1)

    # -- fairseq ------------------------------------------------------------------
    def forward(self, model, sample, reduce=True):
        """Loss, sample size and logging outputs for one batch."""
        nsentences = sample["target"].size(0)
        training = model.training
        device = sample["target"].device
        if training:
            step = trainer_num_updates()
            self._check_resume(step)
            self.history.to(device).begin(step)
        cutoff = torch.as_tensor(self.history.cutoff, dtype=torch.float64, device=device)
        net_output = counted = None
        fused = self.fused_inputs(model, sample)
        if fused is not None:
            out, n_correct = fused_loss_truncation_loss(
                *fused.projection, fused.target, cutoff, self.eps, self.padding_idx,
                truncate=training, accuracy=self.report_accuracy,
            )  # fmt: skip
            counted = (n_correct, fused.target)
        else:
            net_output = model(**sample["net_input"])
            lprobs, target = self.get_lprobs_and_target(model, net_output, sample)
            out = loss_truncation_loss(
                lprobs, target.view(nsentences, -1), cutoff, self.eps, self.padding_idx,
                truncate=training,
            )  # fmt: skip
        if training:
            self.history.add(self._all_workers(out.sequence_nll))
        ntokens = sample["ntokens"]
        sample_size = nsentences if self.sentence_avg else ntokens
        active = torch.isfinite(cutoff)
        logging_output = {
            "loss": out.loss.data,
            "nll_loss": out.nll.data,
            "ntokens": ntokens,
            "nsentences": nsentences,
            "sample_size": sample_size,
            "lt_kept_sentences": out.kept_sequences.data,
            "lt_kept_tokens": out.kept_tokens.data,
            # summable: sentences under a finite cutoff, and the cutoff times them
            "lt_active": active.long() * nsentences,
            "lt_cutoff_sum": torch.where(active, cutoff, 0.0) * nsentences,
        }
        if self.report_accuracy:
            add_accuracy(self, model, net_output, sample, logging_output, counted)
        return out.loss, sample_size, logging_output

    @classmethod
    def reduce_metrics(cls, logging_outputs) -> None:
        """Fairseq's loss / nll_loss / ppl / accuracy, plus the fraction of sequences
        (and tokens) within the cutoff, and the cutoff (mean sequence NLL, base 2)
        while it is finite."""
        super().reduce_metrics(logging_outputs)
        nsentences = sum(log.get("nsentences", 0) for log in logging_outputs)
        ntokens = sum(log.get("ntokens", 0) for log in logging_outputs)
        if nsentences > 0:
            kept = sum(log.get("lt_kept_sentences", 0) for log in logging_outputs)
            metrics.log_scalar("lt_kept_ratio", kept / nsentences, nsentences, round=3)
        if ntokens > 0:
            kept = sum(log.get("lt_kept_tokens", 0) for log in logging_outputs)
            metrics.log_scalar("lt_kept_token_ratio", kept / ntokens, ntokens, round=3)
        active = sum(log.get("lt_active", 0) for log in logging_outputs)
        if active > 0:
            total = sum(log.get("lt_cutoff_sum", 0) for log in logging_outputs)
            metrics.log_scalar("lt_cutoff", total / active / LN2, active, round=3)
