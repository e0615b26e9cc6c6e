"""``--criterion lfd_poe``: stage 2 of LFD, a product of experts with the frozen
degenerative model.

LFD: Hong et al., "Learning to Diversify Neural Text Generation via Degenerative
Model" (arXiv 2309.12619). The main model is trained through
``log p_poe = log_softmax(log q_main + beta * log q_degen)`` (plus ``lambda`` times
its own NLL), so it need not learn what the degenerative model already explains.
Only the main model is saved and used for generation. Needs
``--task translation_lfd`` or ``--task language_modeling_lfd`` with
``--degenerative-checkpoint``.
"""
from dataclasses import dataclass, field

from fairseq.criterions import register_criterion
from fairseq.criterions.label_smoothed_cross_entropy import (
    LabelSmoothedCrossEntropyCriterion,
    LabelSmoothedCrossEntropyCriterionConfig,
)
from fairseq.logging import metrics

from ..losses import poe_nll_loss
from .accuracy import add_accuracy
from .checks import check_non_negative, check_range

LN2 = 0.6931471805599453


@dataclass
class LfdPoeConfig(LabelSmoothedCrossEntropyCriterionConfig):
    degenerative_scale: float = field(
        default=1.0,
        metadata={"help": "beta >= 0: weight of the degenerative model's log-probs in the product of experts"},
    )
    mle_weight: float = field(
        # 1.0 from scripts/lfd_sweep.py (README): with lambda = 0 the main model alone
        # is poor (it leaves frequent tokens, EOS included, to the degenerative expert).
        default=1.0,
        metadata={"help": "lambda >= 0: weight of the main model's own NLL added to the PoE loss"},
    )


@register_criterion("lfd_poe", dataclass=LfdPoeConfig)
class LfdPoeCriterion(LabelSmoothedCrossEntropyCriterion):
    """-log softmax(z_main + beta * log q_degen)[y] + lambda * NLL_main."""

    uses_degenerative_model = True  # the LFD tasks check the checkpoint when they see this

    def __init__(
        self,
        task,
        sentence_avg,
        label_smoothing,
        degenerative_scale=1.0,
        mle_weight=1.0,
        ignore_prefix_size=0,
        report_accuracy=False,
    ):
        check_non_negative("--degenerative-scale", degenerative_scale)
        check_non_negative("--mle-weight", mle_weight)
        check_range("--label-smoothing", label_smoothing, 0.0, 1.0)
        if getattr(task, "degenerative", None) is None:
            raise ValueError(
                "--criterion lfd_poe needs --task translation_lfd or --task "
                "language_modeling_lfd (with --degenerative-checkpoint PATH), got "
                f"--task {getattr(getattr(task, 'cfg', None), '_name', type(task).__name__)}"
            )
        super().__init__(
            task, sentence_avg, label_smoothing, ignore_prefix_size, report_accuracy
        )
        self.beta = degenerative_scale
        self.mle_weight = mle_weight

    def forward(self, model, sample, reduce=True):
        """Loss, sample size and logging outputs for one batch."""
        net_output = model(**sample["net_input"])
        logits = net_output[0]
        degen_lprobs = self.task.degenerative.log_probs(model, sample)
        target = model.get_targets(sample, net_output)
        if self.ignore_prefix_size > 0:
            p = self.ignore_prefix_size
            logits, degen_lprobs, target = logits[:, p:], degen_lprobs[:, p:], target[:, p:]
        vocab = logits.size(-1)
        target = target.reshape(-1)
        loss, poe_nll, main_nll = poe_nll_loss(
            logits.reshape(-1, vocab), degen_lprobs.reshape(-1, vocab), target,
            self.beta, self.mle_weight, self.eps, self.padding_idx,
        )  # fmt: skip
        pad = target.eq(self.padding_idx)
        degen_nll = (
            -degen_lprobs.reshape(-1, vocab).gather(-1, target.unsqueeze(-1)).squeeze(-1)
        ).masked_fill(pad, 0.0).sum()
        ntokens = sample["ntokens"]
        nsentences = sample["target"].size(0)
        sample_size = nsentences if self.sentence_avg else ntokens
        logging_output = {
            "loss": loss.data,
            "nll_loss": main_nll.data,
            "poe_loss": poe_nll.data,
            "degen_nll_loss": degen_nll.data,
            "ntokens": ntokens,
            "nsentences": nsentences,
            "sample_size": sample_size,
        }
        if self.report_accuracy:
            add_accuracy(self, model, net_output, sample, logging_output)
        return loss, sample_size, logging_output

    @classmethod
    def reduce_metrics(cls, logging_outputs) -> None:
        """Fairseq's loss / nll_loss (main model) / ppl / accuracy, plus the PoE NLL
        and the degenerative model's own NLL, per token in base 2."""
        super().reduce_metrics(logging_outputs)
        ntokens = sum(log.get("ntokens", 0) for log in logging_outputs)
        if ntokens > 0:
            for key in ("poe_loss", "degen_nll_loss"):
                total = sum(log.get(key, 0) for log in logging_outputs)
                metrics.log_scalar(key, total / ntokens / LN2, ntokens, round=3)
