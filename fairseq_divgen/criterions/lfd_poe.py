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

from ..losses import Projection, fused_lfd_loss, lfd_loss
from .accuracy import add_accuracy
from .checks import check_non_negative, check_range
from .fused import FusedOutputMixin, fused_output_field

LN2 = 0.6931471805599453


@dataclass
class LfdPoeConfig(LabelSmoothedCrossEntropyCriterionConfig):
    label_smoothing: float = field(
        default=0.0,
        metadata={
            "help": "eps in [0, 1], applied to the product of experts in fairseq's "
            "convention (eps / (V - 1) per other symbol, as label_smoothed_cross_entropy; "
            "note tailr's eps / V)"
        },
    )
    degenerative_scale: float = field(
        default=1.0,
        metadata={"help": "beta >= 0: weight of the degenerative model's log-probs in the product of experts"},
    )
    mle_weight: float = field(
        # 3.0 from scripts/lfd_study.py on real dialogue (docs/lfd.md): the main model's
        # validation NLL about 5% above MLE's and replies of the references' length; with
        # lambda = 1 it was 21-25% above and replies ran long.
        default=3.0,
        metadata={"help": "lambda >= 0: weight of the main model's own NLL added to the PoE loss"},
    )
    eos_in_product: bool = field(
        # Off by default (docs/lfd.md, scripts/lfd_study.py): with EOS in the product the
        # main model learns to stop too rarely and, generating alone, runs on.
        default=False,
        metadata={
            "help": "put the end-of-sentence symbol into the product of experts too (the "
            "paper's objective exactly). Default: p(eos) is the main model's own and only "
            "the other symbols share the rest as a product, so the main model learns the "
            "data's stopping probability"
        },
    )
    fused_output: bool = fused_output_field()


@register_criterion("lfd_poe", dataclass=LfdPoeConfig)
class LfdPoeCriterion(FusedOutputMixin, LabelSmoothedCrossEntropyCriterion):
    """-log softmax(z_main + beta * log q_degen)[y] + lambda * NLL_main."""

    def __init__(
        self,
        task,
        sentence_avg,
        label_smoothing,
        degenerative_scale=1.0,
        mle_weight=3.0,
        eos_in_product=False,
        ignore_prefix_size=0,
        report_accuracy=False,
        fused_output=False,
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
        # The LFD tasks check (and later load) the checkpoint only when this is set:
        # with beta = 0 the product is the main model alone.
        self.uses_degenerative_model = degenerative_scale != 0.0
        self.mle_weight = mle_weight
        self.exclude_eos = not eos_in_product
        self.eos_idx = task.target_dictionary.eos()
        self.fused_output = fused_output

    def forward(self, model, sample, reduce=True):
        """Loss, sample size and logging outputs for one batch."""
        if getattr(getattr(model, "decoder", None), "adaptive_softmax", None) is not None:
            raise ValueError(
                "--criterion lfd_poe needs full-vocabulary logits, but the model has an "
                "adaptive softmax (--adaptive-softmax-cutoff): train it without one."
            )
        net_output = counted = None
        fused = self.fused_inputs(model, sample)
        if fused is not None:
            target = fused.target.reshape(-1)
            out, n_correct = fused_lfd_loss(
                *fused.projection, self._degenerative_rows(model, sample), target, self.beta,
                self.mle_weight, self.eps, self.padding_idx, self.eos_idx, self.exclude_eos,
                self.report_accuracy,
            )  # fmt: skip
            counted = (n_correct, fused.target)
        else:
            net_output = model(**sample["net_input"])
            out, target = self._unfused_loss(model, sample, net_output)
        loss = out.loss
        ntokens = sample["ntokens"]
        nsentences = sample["target"].size(0)
        sample_size = nsentences if self.sentence_avg else ntokens
        logging_output = {
            "loss": loss.data,
            "nll_loss": out.main_nll.data,
            "poe_loss": out.poe_nll.data,
            "eos_nll_sum": out.main_eos_nll.data,
            "eos_count": target.eq(self.eos_idx).sum().data,
            "ntokens": ntokens,
            "nsentences": nsentences,
            "sample_size": sample_size,
        }
        if out.degen_nll is not None:
            logging_output["degen_nll_loss"] = out.degen_nll.data
        if self.report_accuracy:
            add_accuracy(self, model, net_output, sample, logging_output, counted)
        return loss, sample_size, logging_output

    def _unfused_loss(self, model, sample, net_output):
        """``(lfd_loss result, flat target)`` from the main model's full logits."""
        logits = net_output[0]
        target = model.get_targets(sample, net_output)
        if self.ignore_prefix_size > 0:
            p = self.ignore_prefix_size
            logits, target = logits[:, p:], target[:, p:]
        vocab = logits.size(-1)
        target = target.reshape(-1)
        out = lfd_loss(
            logits.reshape(-1, vocab), self._degenerative_rows(model, sample),
            target, self.beta, self.mle_weight, self.eps, self.padding_idx,
            self.eos_idx, self.exclude_eos,
        )  # fmt: skip
        return out, target

    def _degenerative_rows(self, model, sample):
        """The degenerative model's rows for the loss, fused or not: a :class:`Projection`
        of its features, so that its (N, V) logits are made a chunk at a time and never
        exist at once (its full logits if its model has no plain output projection;
        None for beta = 0)."""
        if self.beta == 0.0:
            return None
        p = self.ignore_prefix_size
        features = self.task.degenerative.features(model, sample)
        if features is None:
            logits = self.task.degenerative.logits(model, sample)[:, p:]
            return logits.reshape(-1, logits.size(-1))
        h, weight, bias = features
        return Projection(h[:, p:].reshape(-1, h.size(-1)), weight, bias)

    @classmethod
    def reduce_metrics(cls, logging_outputs) -> None:
        """Fairseq's loss / nll_loss (main model) / ppl / accuracy, plus the PoE NLL,
        the main model's NLL at gold EOS positions, and (validation) the degenerative
        model's own NLL, per token in base 2."""
        super().reduce_metrics(logging_outputs)
        ntokens = sum(log.get("ntokens", 0) for log in logging_outputs)
        if ntokens > 0:
            for key in ("poe_loss", "degen_nll_loss"):
                if any(key in log for log in logging_outputs):
                    total = sum(log.get(key, 0) for log in logging_outputs)
                    metrics.log_scalar(key, total / ntokens / LN2, ntokens, round=3)
        n_eos = sum(log.get("eos_count", 0) for log in logging_outputs)
        if n_eos > 0:
            # the main model's own NLL at gold end-of-sentence positions (docs/lfd.md)
            total = sum(log.get("eos_nll_sum", 0) for log in logging_outputs)
            metrics.log_scalar("eos_nll", total / n_eos / LN2, n_eos, round=3)
