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
from fairseq.logging import metrics
from omegaconf import II

from ..checks import check_weight
from ..losses import lfd_loss
from .base import LN2, DivgenCriterion, SmoothedDivgenConfig


@dataclass
class LfdPoeConfig(SmoothedDivgenConfig):
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
        metadata={
            "help": "beta >= 0: weight of the degenerative model's log-probs in the "
            "product of experts"
        },
    )
    mle_weight: float = field(
        # 3.0 from scripts/lfd_study.py on real dialogue (docs/lfd.md): the main model's
        # validation NLL about 5% above MLE's and replies of the references' length; with
        # lambda = 1 it was 21-25% above and replies ran long.
        default=3.0,
        metadata={"help": "lambda >= 0: weight of the main model's own NLL added to the PoE loss"},
    )
    # where stage 2 saves and resumes: checked against the degenerative checkpoint
    save_dir: str = II("checkpoint.save_dir")
    restore_file: str = II("checkpoint.restore_file")
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


@register_criterion("lfd_poe", dataclass=LfdPoeConfig)
class LfdPoeCriterion(DivgenCriterion):
    """-log softmax(z_main + beta * log q_degen)[y] + lambda * NLL_main."""

    nll_key = "main_nll"

    def __init__(
        self,
        task,
        sentence_avg,
        label_smoothing=0.0,
        degenerative_scale=1.0,
        mle_weight=3.0,
        eos_in_product=False,
        ignore_prefix_size=0,
        report_accuracy=False,
        fused_output=False,
        ddp_backend=None,
        save_dir=None,
        restore_file=None,
    ):
        check_weight("--degenerative-scale", degenerative_scale)
        check_weight("--mle-weight", mle_weight)
        if getattr(task, "degenerative", None) is None:
            raise ValueError(
                "--criterion lfd_poe needs --task translation_lfd or --task "
                "language_modeling_lfd (with --degenerative-checkpoint PATH), got "
                f"--task {getattr(getattr(task, 'cfg', None), '_name', type(task).__name__)}"
            )
        super().__init__(
            task,
            sentence_avg,
            label_smoothing,
            ignore_prefix_size,
            report_accuracy,
            fused_output,
            ddp_backend,
        )
        self.beta = degenerative_scale
        # The LFD tasks check (and later load) the checkpoint only when this is set:
        # with beta = 0 the product is the main model alone.
        self.uses_degenerative_model = degenerative_scale != 0.0
        self.mle_weight = mle_weight
        self.eos_in_product = eos_in_product
        self.eos_idx = task.target_dictionary.eos()
        self.save_dir, self.restore_file = save_dir, restore_file

    def compute_loss(self, model, source, target, sample):
        """The product of experts' sums; the degenerative model's logits are made a chunk
        of rows at a time from its features, and checked finite."""
        if getattr(getattr(model, "decoder", None), "adaptive_softmax", None) is not None:
            raise ValueError(
                "--criterion lfd_poe needs full-vocabulary logits, but the model has an "
                "adaptive softmax (--adaptive-softmax-cutoff): train it without one."
            )
        degenerative = None
        if self.beta != 0.0:  # beta = 0: the product is the main model alone
            degenerative = self.task.degenerative.rows(model, sample, self.ignore_prefix_size)
        sums = lfd_loss(
            source,
            degenerative,
            target,
            self.beta,
            self.mle_weight,
            self.eps,
            self.padding_idx,
            self.eos_idx,
            self.eos_in_product,
            self.report_accuracy,
        )
        if degenerative is not None:
            self.task.degenerative.watch(degenerative)
        return sums

    def logging_extras(self, sums, target, sample):
        """The product's NLL, the main model's NLL at gold EOS, and (validation) the
        degenerative model's own NLL."""
        extras = {
            "poe_loss": sums["poe_nll"].data,
            "eos_nll_sum": sums["main_eos_nll"].data,
            "eos_count": target.eq(self.eos_idx).sum().data,
        }
        if "degen_nll" in sums:
            extras["degen_nll_loss"] = sums["degen_nll"].data
        return extras

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
