"""``--criterion tailr``: TaiLr (Ji et al., ICLR 2023) as a fairseq criterion.

Flag names and defaults follow the authors' fairseq scripts, so their command
lines (``--criterion tailr --label-smoothing 0.1 --density-min-weight 0.3
--density-ratio-threshold 0.1``) run unchanged apart from ``--user-dir``.
"""

from dataclasses import dataclass, field

from fairseq.criterions import register_criterion
from fairseq.logging import metrics

from ..checks import check_non_negative, check_range
from ..losses import scheduled_gamma, tailr_loss
from ..update_count import trainer_num_updates
from .base import DivgenConfig, DivgenCriterion


@dataclass
class TailrConfig(DivgenConfig):
    label_smoothing: float = field(
        default=0.0,
        metadata={
            "help": "eps in [0, 1]: the smoothing term is eps / V per symbol and not "
            "weighted, as in the authors' code (fairseq's label_smoothed_cross_entropy "
            "uses eps / (V - 1)); the authors used 0.1 for IWSLT14 and BART Gigaword"
        },
    )
    density_ratio_threshold: float = field(
        default=1.0,
        metadata={
            "help": "gamma in [0, 1]: the proxy mixes gamma * data + (1 - gamma) * "
            "model; 0 is exactly MLE, 1 (the default) weights each token by its own "
            "probability, the most aggressive setting. The authors used 0.1 "
            "(IWSLT14 transformer), 0.8 (BART-base Gigaword), 1e-7 (synthetic data, "
            "WritingPrompts)"
        },
    )
    density_min_weight: float = field(
        default=0.0,
        metadata={
            "help": "lower clamp of the per-token weight, in [0, 1]; the default 0 "
            "does not clamp. The authors used 0.3 (IWSLT14), 0.2 (Gigaword, synthetic, "
            "WritingPrompts)"
        },
    )
    density_ratio_warmup_updates: int = field(
        default=0,
        metadata={
            "help": "ramp gamma linearly from 0 (exactly MLE) to "
            "--density-ratio-threshold over the first N updates; 0 uses gamma from the start"
        },
    )


@register_criterion("tailr", dataclass=TailrConfig)
class TailrCriterion(DivgenCriterion):
    """MLE with each gold token weighted by p / (gamma + (1 - gamma) p)."""

    def __init__(
        self,
        task,
        sentence_avg,
        label_smoothing=0.0,
        density_ratio_threshold=1.0,
        density_min_weight=0.0,
        density_ratio_warmup_updates=0,
        ignore_prefix_size=0,
        report_accuracy=False,
        fused_output=False,
        ddp_backend=None,
    ):
        check_range("--density-ratio-threshold", density_ratio_threshold, 0.0, 1.0)
        check_range("--density-min-weight", density_min_weight, 0.0, 1.0)
        check_non_negative("--density-ratio-warmup-updates", density_ratio_warmup_updates)
        super().__init__(
            task,
            sentence_avg,
            label_smoothing,
            ignore_prefix_size,
            report_accuracy,
            fused_output,
            ddp_backend,
        )
        self.gamma = density_ratio_threshold
        self.min_weight = density_min_weight
        self.warmup_updates = density_ratio_warmup_updates

    def current_gamma(self, training: bool) -> float:
        """gamma in force: in training, the warm-up ramp at the trainer's update count;
        in validation always ``--density-ratio-threshold`` (so that validation's
        ``loss`` scores one objective before, during and after the ramp)."""
        if self.warmup_updates == 0 or not training:
            return self.gamma
        return scheduled_gamma(self.gamma, self.warmup_updates, trainer_num_updates())

    def compute_loss(self, model, source, target, sample):
        """TaiLr's sums at the gamma in force."""
        self._gamma_now = self.current_gamma(model.training)
        return tailr_loss(
            source,
            target,
            self._gamma_now,
            self.min_weight,
            self.eps,
            self.padding_idx,
            self.report_accuracy,
        )

    def logging_extras(self, sums, target, sample):
        """The weights' sum, the tokens they were averaged over, gamma times those."""
        count = self.target_count(target, sample)
        return {
            "tailr_weight_sum": sums["weight"].data,
            "tailr_weight_count": count,
            "tailr_gamma_sum": self._gamma_now * count,  # summable across workers
        }

    @classmethod
    def reduce_metrics(cls, logging_outputs) -> None:
        """Fairseq's loss / nll_loss / ppl / accuracy, plus the mean TaiLr weight and
        the gamma in force."""
        super().reduce_metrics(logging_outputs)
        weight_sum = sum(log.get("tailr_weight_sum", 0) for log in logging_outputs)
        gamma_sum = sum(log.get("tailr_gamma_sum", 0) for log in logging_outputs)
        count = sum(log.get("tailr_weight_count", 0) for log in logging_outputs)
        if count > 0:
            metrics.log_scalar("tailr_weight", weight_sum / count, count, round=3)
            # 8 decimals: shows gamma = 1e-7, and hides the last-bit differences that
            # summing gamma * count in another order (other workers) would print
            metrics.log_scalar("tailr_gamma", gamma_sum / count, count, round=8)
