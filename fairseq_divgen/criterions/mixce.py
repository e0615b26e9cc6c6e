"""``--criterion mixce``: MixCE's token-level objective as a fairseq criterion.

Zhang et al., "MixCE: Training Autoregressive Language Models by Mixing Forward and
Reverse Cross-Entropies", ACL 2023. ``--mixing-ratio`` is the authors'
``--mixing_ratio`` (eta; their scripts' default 0.5, searched over {0, 0.01, 0.1,
0.3, 0.5, 0.7, 0.9, 0.99, 1}); eta = 1 is exactly cross-entropy. The loss is the
weighted NLL summed over tokens over ``sample_size``, i.e. their ``reduction="mean"``.
"""

from dataclasses import dataclass, field

from fairseq.criterions import register_criterion
from fairseq.logging import metrics

from ..checks import check_range
from ..losses import mixce_loss
from .base import DivgenConfig, DivgenCriterion


@dataclass
class MixceConfig(DivgenConfig):
    mixing_ratio: float = field(
        default=0.5,
        metadata={
            "help": "eta in [0, 1]: each token's NLL is weighted by eta + (1 - eta) * p, "
            "p its (detached) model probability; 1 is exactly cross-entropy"
        },
    )


@register_criterion("mixce", dataclass=MixceConfig)
class MixceCriterion(DivgenCriterion):
    """sum_t (eta + (1 - eta) p_t) * NLL_t, with p_t = q_t(y_t) detached."""

    def __init__(
        self,
        task,
        sentence_avg,
        mixing_ratio=0.5,
        ignore_prefix_size=0,
        report_accuracy=False,
        fused_output=False,
        ddp_backend=None,
    ):
        check_range("--mixing-ratio", mixing_ratio, 0.0, 1.0)
        super().__init__(
            task, sentence_avg, 0.0, ignore_prefix_size, report_accuracy, fused_output, ddp_backend
        )
        self.eta = mixing_ratio

    def compute_loss(self, model, source, target, sample):
        """MixCE's sums."""
        return mixce_loss(source, target, self.eta, self.padding_idx, self.report_accuracy)

    def logging_extras(self, sums, target, sample):
        """The weights' sum and the tokens they were averaged over."""
        return {
            "mixce_weight_sum": sums["weight"].data,
            "mixce_weight_count": self.target_count(target, sample),
        }

    @classmethod
    def reduce_metrics(cls, logging_outputs) -> None:
        """Fairseq's loss / nll_loss / ppl / accuracy, plus the mean token weight."""
        super().reduce_metrics(logging_outputs)
        total = sum(log.get("mixce_weight_sum", 0) for log in logging_outputs)
        count = sum(log.get("mixce_weight_count", 0) for log in logging_outputs)
        if count > 0:
            metrics.log_scalar("mixce_weight", total / count, count, round=3)
