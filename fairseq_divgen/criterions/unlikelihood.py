"""``--criterion unlikelihood``: token-level unlikelihood training as a fairseq criterion.

Welleck et al., "Neural Text Generation with Unlikelihood Training", ICLR 2020. The
flag keeps the name of the authors' ``candidate_penalty_cross_entropy`` criterion
(``--rank-alpha``, default 1.0 as in their commands). Unlike that criterion, the
candidates of a position are the earlier tokens of its own target sequence (theirs
flattens the batch, so candidates leak across sentences, and it also penalises the
padding symbol everywhere), and ``loss`` logs the objective while ``nll_loss`` logs
the plain NLL. Normalised as the authors' criterion: the summed NLL and penalty over
``sample_size`` (ntokens, or nsentences with --sentence-avg). With
--ignore-prefix-size the prefix tokens are neither scored nor candidates.
"""

from dataclasses import dataclass, field

from fairseq.criterions import register_criterion
from fairseq.logging import metrics

from ..checks import check_non_negative
from ..losses import unlikelihood_loss
from .base import LN2, DivgenConfig, DivgenCriterion


@dataclass
class UnlikelihoodConfig(DivgenConfig):
    rank_alpha: float = field(
        default=1.0,
        metadata={
            "help": "alpha >= 0: weight of the penalty -log(1 - q(c)) on each earlier "
            "token c of the same target sequence; 0 is exactly cross-entropy"
        },
    )


@register_criterion("unlikelihood", dataclass=UnlikelihoodConfig)
class UnlikelihoodCriterion(DivgenCriterion):
    """NLL + alpha * sum over earlier target tokens c of -log(1 - q(c))."""

    def __init__(
        self,
        task,
        sentence_avg,
        rank_alpha=1.0,
        ignore_prefix_size=0,
        report_accuracy=False,
        fused_output=False,
        ddp_backend=None,
    ):
        check_non_negative("--rank-alpha", rank_alpha)
        super().__init__(
            task, sentence_avg, 0.0, ignore_prefix_size, report_accuracy, fused_output, ddp_backend
        )
        self.alpha = rank_alpha

    def compute_loss(self, model, source, target, sample):
        """Unlikelihood's sums (candidates from each target sequence's own tokens)."""
        return unlikelihood_loss(source, target, self.alpha, self.padding_idx, self.report_accuracy)

    def logging_extras(self, sums, target, sample):
        """The penalty and the number of candidates."""
        return {"ul_penalty": sums["penalty"].data, "ul_candidates": sums["candidates"].data}

    @classmethod
    def reduce_metrics(cls, logging_outputs) -> None:
        """Fairseq's loss / nll_loss / ppl / accuracy, plus the penalty per token (base 2)
        and the mean number of candidates per token."""
        super().reduce_metrics(logging_outputs)
        ntokens = sum(log.get("ntokens", 0) for log in logging_outputs)
        if ntokens > 0:
            penalty = sum(log.get("ul_penalty", 0) for log in logging_outputs)
            cands = sum(log.get("ul_candidates", 0) for log in logging_outputs)
            metrics.log_scalar("ul_penalty", penalty / ntokens / LN2, ntokens, round=3)
            metrics.log_scalar("ul_candidates", cands / ntokens, ntokens, round=2)
