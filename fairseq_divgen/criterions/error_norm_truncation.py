"""``--criterion error_norm_truncation``: ENT-Threshold as a fairseq criterion.

Li et al., "Error Norm Truncation: Robust Training in the Presence of Data Noise for
Text Generation Models", ICLR 2024. Flag names follow the authors' fairseq scripts
(``--token-prune-threshold``, ``--start-prune-iteration``, on top of
``label_smoothed_cross_entropy``). As in their task, training is plain
(label-smoothed) MLE while the update count is at most the start iteration; after
that, tokens with ``||q - onehot(y)||_2 > threshold`` are dropped, and the loss is
normalised by ``sample_size`` = ntokens (all tokens, not the kept ones), as theirs.
Validation reports the untruncated objective as ``loss`` (so that selecting
checkpoints by loss does not reward dropping data) and the kept fraction.
"""

import math
from dataclasses import dataclass, field
from typing import Optional

from fairseq.criterions import register_criterion
from fairseq.logging import metrics

from ..checks import check_non_negative, check_range
from ..losses import error_norm_truncated_loss
from ..update_count import trainer_num_updates
from .base import DivgenCriterion, SmoothedDivgenConfig

SQRT2 = math.sqrt(2.0)


@dataclass
class ErrorNormTruncationConfig(SmoothedDivgenConfig):
    token_prune_threshold: Optional[float] = field(
        default=None,
        metadata={
            "help": "drop target tokens whose error norm ||q - onehot(y)||_2 (in [0, sqrt 2]) "
            "exceeds this value, in (0, sqrt 2]; required (the authors publish no default)"
        },
    )
    start_prune_iteration: int = field(
        default=0,
        metadata={
            "help": "plain MLE while the number of finished updates is at most N, as the "
            "authors' task; truncation afterwards"
        },
    )


@register_criterion("error_norm_truncation", dataclass=ErrorNormTruncationConfig)
class ErrorNormTruncationCriterion(DivgenCriterion):
    """Label-smoothed cross-entropy over the tokens whose error norm is at most the threshold."""

    def __init__(
        self,
        task,
        sentence_avg,
        label_smoothing=0.0,
        token_prune_threshold=None,
        start_prune_iteration=0,
        ignore_prefix_size=0,
        report_accuracy=False,
        fused_output=False,
        ddp_backend=None,
    ):
        if token_prune_threshold is None:
            raise ValueError(
                "--criterion error_norm_truncation needs --token-prune-threshold T, T in "
                "(0, sqrt 2] = (0, 1.4142...]: tokens whose error norm exceeds T are dropped"
            )
        check_range(
            "--token-prune-threshold",
            token_prune_threshold,
            0.0,
            SQRT2,
            low_open=True,
            why=" (the error norm lies in [0, sqrt 2]; sqrt 2 never truncates)",
        )
        check_non_negative("--start-prune-iteration", start_prune_iteration)
        super().__init__(
            task,
            sentence_avg,
            label_smoothing,
            ignore_prefix_size,
            report_accuracy,
            fused_output,
            ddp_backend,
        )
        self.threshold = token_prune_threshold
        self.start_iteration = start_prune_iteration

    def compute_loss(self, model, source, target, sample):
        """ENT's sums; truncating only in training after the start iteration."""
        self._truncating = model.training and trainer_num_updates() > self.start_iteration
        return error_norm_truncated_loss(
            source,
            target,
            self.threshold,
            self.eps,
            self.padding_idx,
            self._truncating,
            self.report_accuracy,
        )

    def logging_extras(self, sums, target, sample):
        """Tokens within the threshold, the norms, and the tokens trained truncated."""
        count = self.target_count(target, sample)
        return {
            "ent_kept": sums["kept"].data,  # within the threshold (dropped only when truncating)
            "ent_norm_sum": sums["norm"].data,
            "ent_count": count,
            "ent_truncating": count if self._truncating else 0,
        }

    @classmethod
    def reduce_metrics(cls, logging_outputs) -> None:
        """Fairseq's loss / nll_loss / ppl / accuracy, plus the fraction of tokens within
        the threshold, the mean error norm, and the fraction of tokens trained under
        truncation (0 during the warm-up, and in validation)."""
        super().reduce_metrics(logging_outputs)
        count = sum(log.get("ent_count", 0) for log in logging_outputs)
        if count > 0:
            kept = sum(log.get("ent_kept", 0) for log in logging_outputs)
            norms = sum(log.get("ent_norm_sum", 0) for log in logging_outputs)
            active = sum(log.get("ent_truncating", 0) for log in logging_outputs)
            metrics.log_scalar("ent_kept_ratio", kept / count, count, round=3)
            metrics.log_scalar("ent_norm", norms / count, count, round=3)
            metrics.log_scalar("ent_active", active / count, count, round=3)
