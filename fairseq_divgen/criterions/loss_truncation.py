"""``--criterion loss_truncation``: loss truncation as a fairseq criterion.

Kang and Hashimoto, "Improved Natural Language Generation via Loss Truncation", ACL
2020. The flags are the arguments of the authors' ``LossDropper(dropc, min_count,
recompute)`` with its defaults (0.4, 10000, 10000): plain MLE until ``min_count``
sequence losses have been seen (the hot start), then sequences whose mean token NLL
exceeds the (1 - dropc) quantile of the last ``recompute`` sequence losses are dropped;
the quantile is recomputed every ``recompute`` new losses.

Several workers share one history: at the start of the next update, the sequence losses
of every micro-batch of the update are gathered from all data-parallel workers (one
fixed-size all-gather, each micro-batch padded to the largest possible batch, so no host
synchronisation) and enter the history in the order (micro-batch, worker), so the cutoff
of an update depends only on the losses of earlier updates: two workers train exactly as
one worker with --update-freq 2. Only batches the update really used enter: a batch's
losses count once the backward of its loss has completed with a non-zero gradient, which
leaves out fairseq's dummy batches (their loss is multiplied by 0) and a batch whose
backward ran out of memory. fairseq keeps a criterion's state in its checkpoints only
when the criterion has parameters (and then wraps it in DDP and hands them to the
optimizer), so the history is not saved: a resumed run rebuilds it, with a warning, as
the run began: plain MLE until ``min_count`` new sequence losses have been seen, then
truncation against the rebuilt history. The loss is the token sum over the kept
sequences over ``sample_size`` = ntokens (all tokens, as loss_dropper's mean over all
examples with dropped ones zeroed). Validation reports the untruncated objective as
``loss`` and the fraction of sequences within the cutoff.
"""

import logging
import math
from dataclasses import dataclass, field
from typing import List, Optional

import torch
from fairseq.criterions import register_criterion
from fairseq.distributed import utils as distributed_utils
from fairseq.logging import metrics
from omegaconf import II

from ..checks import check_range
from ..losses import LossHistory, loss_truncation_loss, mark_used
from ..update_count import trainer_num_updates
from .base import LN2, DivgenCriterion, SmoothedDivgenConfig

logger = logging.getLogger(__name__)


@dataclass
class LossTruncationConfig(SmoothedDivgenConfig):
    dropc: float = field(
        default=0.4,
        metadata={
            "help": "fraction in [0, 1) of sequences to drop: those above the (1 - dropc) "
            "quantile of recent sequence losses; 0 is exactly MLE"
        },
    )
    min_count: int = field(
        default=10000,
        metadata={"help": "plain MLE until this many sequence losses have been seen (hot start)"},
    )
    recompute: int = field(
        default=10000,
        metadata={
            "help": "the quantile is taken over the last N sequence losses and recomputed "
            "every N new ones (N >= 1)"
        },
    )
    # The largest batch a worker can hold and the micro-batches per update, which fix
    # the size of the all-gather.
    max_sentences: Optional[int] = II("dataset.batch_size")
    max_tokens: Optional[int] = II("dataset.max_tokens")
    update_freq: List[int] = II("optimization.update_freq")


@register_criterion("loss_truncation", dataclass=LossTruncationConfig)
class LossTruncationCriterion(DivgenCriterion):
    """Label-smoothed cross-entropy over the sequences at or below a loss quantile."""

    def __init__(
        self,
        task,
        sentence_avg,
        label_smoothing=0.0,
        dropc=0.4,
        min_count=10000,
        recompute=10000,
        ignore_prefix_size=0,
        report_accuracy=False,
        max_sentences=None,
        max_tokens=None,
        update_freq=(1,),
        fused_output=False,
        ddp_backend=None,
    ):
        check_range("--dropc", dropc, 0.0, 1.0, high_open=True)
        if not (isinstance(min_count, int) and min_count >= 0):
            raise ValueError(f"--min-count must be an integer >= 0, got {min_count}")
        if not (isinstance(recompute, int) and recompute >= 1):
            raise ValueError(f"--recompute must be an integer >= 1, got {recompute}")
        super().__init__(
            task,
            sentence_avg,
            label_smoothing,
            ignore_prefix_size,
            report_accuracy,
            fused_output,
            ddp_backend,
        )
        self.history = LossHistory(dropc, min_count, recompute, gather=self._all_workers)
        bounds = [b for b in (max_sentences, max_tokens) if b]
        self.max_sentences = min(bounds) if bounds else None  # every sentence has >= 1 token
        self.micro_batches = max(update_freq) if update_freq else 1
        self._checked_resume = False

    def _check_resume(self, num_updates: int) -> None:
        if self._checked_resume:
            return
        self._checked_resume = True
        if num_updates > 0:
            logger.warning(
                "loss_truncation: training resumes at update %d; fairseq checkpoints do "
                "not keep the loss history, so it is rebuilt: plain MLE until %d new "
                "sequence losses have been seen (--min-count), then truncation",
                num_updates,
                self.history.min_count,
            )

    # -- distributed ------------------------------------------------------------
    def _all_workers(self, batches: List[torch.Tensor]) -> torch.Tensor:
        """The sequence losses of one update's micro-batches on every data-parallel
        worker, in the order (micro-batch, worker), NaN-padded to a fixed size (1-D)."""
        group = distributed_utils.get_data_parallel_group()
        world = distributed_utils.get_world_size(group)
        if world <= 1:
            return torch.cat(batches) if batches else torch.zeros(0, device=self._device)
        if self.max_sentences is None:
            raise ValueError(
                "--criterion loss_truncation with several workers needs "
                "--max-tokens or --batch-size (they bound the batch it gathers)"
            )
        size, slots = self.max_sentences, max(self.micro_batches, len(batches))
        if slots > self.micro_batches or any(b.numel() > size for b in batches):
            raise RuntimeError(
                f"loss_truncation: {len(batches)} micro-batches of up to "
                f"{max(b.numel() for b in batches)} sequences exceed the bounds "
                f"({self.micro_batches} micro-batches, --update-freq; {size} sequences, "
                "--batch-size / --max-tokens)"
            )
        padded = torch.full((slots, size), math.nan, device=self._device)
        for i, losses in enumerate(batches):
            padded[i, : losses.numel()] = losses
        gathered = distributed_utils.all_gather(padded.reshape(-1), group, return_tensor=True)
        return gathered.reshape(world, slots, size).transpose(0, 1).reshape(-1)

    # -- fairseq ------------------------------------------------------------------
    def compute_loss(self, model, source, target, sample):
        """The truncated sums under the cutoff in force; in training the batch's
        sequence losses are recorded for the next updates."""
        training = model.training
        device = self._device = target.device
        if training:
            step = trainer_num_updates()
            self._check_resume(step)
            self.history.to(device).begin(step)
        cutoff = self.history.cutoff_on(device)
        sums = loss_truncation_loss(
            source,
            target,
            cutoff,
            self.eps,
            self.padding_idx,
            truncate=training,
            accuracy=self.report_accuracy,
        )
        if training:
            sums["loss"], used = mark_used(sums["loss"])
            self.history.add(sums["sequence_nll"], used)
        sums["cutoff"] = cutoff
        return sums

    def logging_extras(self, sums, target, sample):
        """Kept sequences and tokens, and the cutoff (summable)."""
        nsentences = sample["target"].size(0)
        cutoff = sums["cutoff"]
        active = torch.isfinite(cutoff)
        return {
            "lt_kept_sentences": sums["kept_sequences"].data,
            "lt_kept_tokens": sums["kept_tokens"].data,
            # summable: sentences under a finite cutoff, and the cutoff times them
            "lt_active": active.long() * nsentences,
            "lt_cutoff_sum": torch.where(active, cutoff, 0.0) * nsentences,
        }

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
