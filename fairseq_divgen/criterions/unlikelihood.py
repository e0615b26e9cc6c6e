"""``--criterion unlikelihood``: token-level unlikelihood training as a fairseq criterion.

Welleck et al., "Neural Text Generation with Unlikelihood Training", ICLR 2020. The
flag keeps the name of the authors' ``candidate_penalty_cross_entropy`` criterion
(``--rank-alpha``, default 1.0 as in their commands). Unlike that criterion, the
candidates of a position are the earlier tokens of its own target sequence (theirs
flattens the batch, so candidates leak across sentences, and it also penalises the
padding symbol everywhere), and ``loss`` logs the objective while ``nll_loss`` logs
the plain NLL.
"""
from dataclasses import dataclass, field

from fairseq.criterions import register_criterion
from fairseq.criterions.label_smoothed_cross_entropy import (
    LabelSmoothedCrossEntropyCriterion,
)
from fairseq.dataclass import FairseqDataclass
from fairseq.logging import metrics
from omegaconf import II

from ..losses import fused_unlikelihood_loss, unlikelihood_loss
from .accuracy import add_accuracy
from .checks import check_non_negative
from .fused import FusedOutputMixin, fused_output_field

LN2 = 0.6931471805599453


@dataclass
class UnlikelihoodConfig(FairseqDataclass):
    rank_alpha: float = field(
        default=1.0,
        metadata={
            "help": "alpha >= 0: weight of the penalty -log(1 - q(c)) on each earlier "
            "token c of the same target sequence; 0 is exactly cross-entropy"
        },
    )
    report_accuracy: bool = field(default=False, metadata={"help": "report accuracy metric"})
    ignore_prefix_size: int = field(default=0, metadata={"help": "Ignore first N tokens"})
    fused_output: bool = fused_output_field()
    sentence_avg: bool = II("optimization.sentence_avg")


@register_criterion("unlikelihood", dataclass=UnlikelihoodConfig)
class UnlikelihoodCriterion(FusedOutputMixin, LabelSmoothedCrossEntropyCriterion):
    """NLL + alpha * sum over earlier target tokens c of -log(1 - q(c))."""

    def __init__(self, task, sentence_avg, rank_alpha=1.0, ignore_prefix_size=0,
                 report_accuracy=False, fused_output=False):  # fmt: skip
        check_non_negative("--rank-alpha", rank_alpha)
        super().__init__(task, sentence_avg, 0.0, ignore_prefix_size, report_accuracy)
        self.alpha = rank_alpha
        self.fused_output = fused_output

    def forward(self, model, sample, reduce=True):
        """Loss, sample size and logging outputs for one batch.

        Normalised as the authors' criterion: the summed NLL and penalty over
        ``sample_size`` (ntokens, or nsentences with --sentence-avg). With
        --ignore-prefix-size the prefix tokens are neither scored nor candidates.
        """
        net_output = counted = None
        fused = self.fused_inputs(model, sample)
        if fused is not None:
            out, n_correct = fused_unlikelihood_loss(
                *fused.projection, fused.target, self.alpha, self.padding_idx, self.report_accuracy
            )
            counted = (n_correct, fused.target)
        else:
            net_output = model(**sample["net_input"])
            lprobs = model.get_normalized_probs(net_output, log_probs=True)  # B x T x V
            target = model.get_targets(sample, net_output)
            if self.ignore_prefix_size > 0:
                lprobs = lprobs[:, self.ignore_prefix_size :, :]
                target = target[:, self.ignore_prefix_size :]
            out = unlikelihood_loss(lprobs, target, self.alpha, self.padding_idx)
        ntokens = sample["ntokens"]
        nsentences = sample["target"].size(0)
        sample_size = nsentences if self.sentence_avg else ntokens
        logging_output = {
            "loss": out.loss.data,
            "nll_loss": out.nll.data,
            "ntokens": ntokens,
            "nsentences": nsentences,
            "sample_size": sample_size,
            "ul_penalty": out.penalty.data,
            "ul_candidates": out.candidates.data,
        }
        if self.report_accuracy:
            add_accuracy(self, model, net_output, sample, logging_output, counted)
        return out.loss, sample_size, logging_output

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
