"""The seven objectives of this package as ``compute_loss_func`` objects for
transformers' ``Trainer``, with the flags (dest names) and defaults of their fairseq
criterions:

- :class:`TailrLoss` (``--criterion tailr``): Ji et al., "Tailoring Language Generation
  Models under Total Variation Distance", ICLR 2023;
- :class:`TruncatedCELoss` (``truncated_ce``, stage 1 of LFD) and :class:`LfdPoeLoss`
  (``lfd_poe``, stage 2): Hong et al., "Learning to Diversify Neural Text Generation via
  Degenerative Model", arXiv 2309.12619;
- :class:`UnlikelihoodLoss` (``unlikelihood``): Welleck et al., "Neural Text Generation
  with Unlikelihood Training", ICLR 2020;
- :class:`LossTruncationLoss` (``loss_truncation``): Kang and Hashimoto, "Improved
  Natural Language Generation via Loss Truncation", ACL 2020;
- :class:`MixceLoss` (``mixce``): Zhang et al., "MixCE: Training Autoregressive Language
  Models by Mixing Forward and Reverse Cross-Entropies", ACL 2023;
- :class:`ErrorNormTruncationLoss` (``error_norm_truncation``): Li et al., "Error Norm
  Truncation: Robust Training in the Presence of Data Noise for Text Generation
  Models", ICLR 2024.

Each class only chooses the arguments of its function in ``fairseq_divgen.losses`` and
what it logs; the math is the fairseq criterions' (docs/tailr.md, docs/lfd.md,
docs/baselines.md). Every loss is its sum over ``num_items_in_batch`` (all non-ignored
labels of the accumulated batch, as fairseq's ``ntokens``), except ``truncated_ce``,
which fairseq divides by the tokens it keeps: here ``ceil(R * num_items_in_batch)``.
"""

import logging
import math
from dataclasses import dataclass
from typing import ClassVar, Optional

import torch

from ..checks import check_non_negative, check_range, check_weight
from ..losses import (
    LossHistory,
    error_norm_truncated_loss,
    lfd_loss,
    loss_truncation_loss,
    mark_used,
    mixce_loss,
    num_kept,
    scheduled_gamma,
    tailr_loss,
    truncated_nll_loss,
    unlikelihood_loss,
)
from ..losses.truncation import ratio_fraction
from .base import DivgenLoss
from .targets import IGNORE_INDEX

logger = logging.getLogger(__name__)
SQRT2 = math.sqrt(2.0)


@dataclass(eq=False, kw_only=True)
class TailrLoss(DivgenLoss):
    """TaiLr: MLE with each gold token weighted by ``p / (gamma + (1 - gamma) p)``,
    clamped to [density_min_weight, 1] (smoothing ``eps / V`` per symbol, unweighted)."""

    criterion: ClassVar[str] = "tailr"

    label_smoothing: float = 0.0
    density_ratio_threshold: float = 1.0
    density_min_weight: float = 0.0
    density_ratio_warmup_updates: int = 0

    def check(self):
        """Ranges of the fairseq flags."""
        super().check()
        check_range("label_smoothing", self.label_smoothing, 0.0, 1.0)
        check_range("density_ratio_threshold", self.density_ratio_threshold, 0.0, 1.0)
        check_range("density_min_weight", self.density_min_weight, 0.0, 1.0)
        check_non_negative("density_ratio_warmup_updates", self.density_ratio_warmup_updates)

    def gamma(self, training: bool) -> float:
        """gamma in force: the warm-up ramp in training, the threshold otherwise."""
        if self.density_ratio_warmup_updates == 0 or not training:
            return self.density_ratio_threshold
        step = self.num_updates("density_ratio_warmup_updates > 0")
        warmup = self.density_ratio_warmup_updates
        return scheduled_gamma(self.density_ratio_threshold, warmup, step)

    def sums(self, source, target, pad, training, degenerative=None):
        """TaiLr's sums at the gamma in force."""
        self._gamma = self.gamma(training)
        return tailr_loss(
            source,
            target.reshape(-1),
            self._gamma,
            self.density_min_weight,
            self.label_smoothing,
            pad,
            self.report_accuracy,
        )

    def extras(self, sums, target):
        """The weights' sum and gamma times the tokens (means per token when logged)."""
        return {
            "tailr_weight": sums["weight"],
            "tailr_gamma": self._gamma * target.ne(IGNORE_INDEX).sum(),
        }


@dataclass(eq=False, kw_only=True)
class TruncatedCELoss(DivgenLoss):
    """Stage 1 of LFD: cross-entropy over the ``ceil(R N)`` lowest-NLL tokens of each
    batch (per forward batch), over ``ceil(R num_items_in_batch)``; plain cross-entropy
    over ``num_items_in_batch`` during the warm-up."""

    criterion: ClassVar[str] = "truncated_ce"

    truncation_ratio: float = 0.5
    truncation_warmup_updates: int = 0

    def check(self):
        """Ranges of the fairseq flags."""
        super().check()
        check_range("truncation_ratio", self.truncation_ratio, 0.0, 1.0, low_open=True)
        check_non_negative("truncation_warmup_updates", self.truncation_warmup_updates)

    def sums(self, source, target, pad, training, degenerative=None):
        """The truncated sums; plain cross-entropy (no ranking) during the warm-up."""
        self._warming_up = (
            training
            and self.truncation_warmup_updates > 0
            and self.num_updates("truncation_warmup_updates > 0") < self.truncation_warmup_updates
        )
        ratio = 1.0 if self._warming_up else self.truncation_ratio
        self._ratio = ratio
        return truncated_nll_loss(
            source, target.reshape(-1), ratio, pad, accuracy=self.report_accuracy
        )

    def denominator(self, sums, count):
        """``ceil(R count)``: the tokens one batch of ``count`` targets keeps."""
        if ratio_fraction(self._ratio) >= 1:
            return count
        exact = count.double().round() if torch.is_tensor(count) else int(count)
        return num_kept(exact, self._ratio)

    def extras(self, sums, target):
        """The truncated loss and the tokens kept."""
        return {"trunc_loss": sums["loss"], "kept_tokens": sums["kept"]}

    def summary(self, totals):
        """trunc_loss per kept token and the fraction of tokens kept."""
        out = super().summary({k: v for k, v in totals.items() if k != "trunc_loss"})
        out.pop("kept_tokens", None)
        kept, tokens = totals.get("kept_tokens", 0.0), totals.get("tokens", 0.0)
        if kept:
            out["trunc_loss"] = totals["trunc_loss"] / kept
        if tokens:
            out["kept_ratio"] = kept / tokens
        return out


@dataclass(eq=False, kw_only=True)
class LfdPoeLoss(DivgenLoss):
    """Stage 2 of LFD: ``-log softmax(z + beta z_degen)[y] + lambda NLL_main`` with the
    frozen degenerative model's logits of the same batch (``DivgenTrainer`` runs it).
    ``eos_token_id`` (not a fairseq flag: fairseq reads its dictionary) is needed with
    ``eos_in_product=False``; ``DivgenTrainer`` takes it from ``model.config``."""

    criterion: ClassVar[str] = "lfd_poe"
    nll_key: ClassVar[str] = "main_nll"

    label_smoothing: float = 0.0
    degenerative_scale: float = 1.0
    mle_weight: float = 3.0
    eos_in_product: bool = False
    eos_token_id: Optional[int] = None

    def check(self):
        """Ranges of the fairseq flags."""
        super().check()
        check_range("label_smoothing", self.label_smoothing, 0.0, 1.0)
        check_weight("degenerative_scale", self.degenerative_scale)
        check_weight("mle_weight", self.mle_weight)
        if self.eos_token_id is not None and not isinstance(self.eos_token_id, int):
            raise ValueError(
                f"eos_token_id must be one int (the end-of-sequence id the targets use), got "
                f"{self.eos_token_id!r}"
            )

    @property
    def uses_degenerative_model(self) -> bool:
        """With beta = 0 the product is the main model alone."""
        return self.degenerative_scale != 0.0

    def sums(self, source, target, pad, training, degenerative=None):
        """The product of experts' sums."""
        if self.uses_degenerative_model and degenerative is None:
            raise ValueError(
                f"LfdPoeLoss(degenerative_scale={self.degenerative_scale}) needs the frozen "
                "degenerative model's logits of the same batch, which a compute_loss_func "
                "does not receive: train with DivgenTrainer(model, args, loss=LfdPoeLoss(...), "
                "degenerative_model=PATH_OR_MODEL)"
            )
        if not self.eos_in_product and self.eos_token_id is None:
            raise ValueError(
                "LfdPoeLoss(eos_in_product=False) needs eos_token_id, the end-of-sequence id "
                "of the targets (DivgenTrainer takes it from model.config.eos_token_id), or "
                "eos_in_product=True"
            )
        degenerative = degenerative if self.uses_degenerative_model else None
        return lfd_loss(
            source,
            degenerative,
            target.reshape(-1),
            self.degenerative_scale,
            self.mle_weight,
            self.label_smoothing,
            pad,
            self.eos_token_id,
            self.eos_in_product,
            self.report_accuracy,
        )

    def extras(self, sums, target):
        """The product's NLL and the main model's NLL at gold EOS."""
        out = {"poe_loss": sums["poe_nll"]}
        if self.eos_token_id is not None:
            out["eos_nll"] = sums["main_eos_nll"]
            out["eos_count"] = target.eq(self.eos_token_id).sum()
        return out

    def summary(self, totals):
        """poe_loss per token, eos_nll per gold EOS."""
        eos_nll, eos_count = totals.pop("eos_nll", 0.0), totals.pop("eos_count", 0.0)
        out = super().summary(totals)
        if eos_count:
            out["eos_nll"] = eos_nll / eos_count
        return out


@dataclass(eq=False, kw_only=True)
class UnlikelihoodLoss(DivgenLoss):
    """Token-level unlikelihood: NLL plus ``alpha sum_c -log(1 - q(c))`` over the earlier
    tokens c of the same target sequence."""

    criterion: ClassVar[str] = "unlikelihood"

    rank_alpha: float = 1.0

    def check(self):
        """Ranges of the fairseq flags."""
        super().check()
        check_non_negative("rank_alpha", self.rank_alpha)

    def sums(self, source, target, pad, training, degenerative=None):
        """Unlikelihood's sums (candidates from each target sequence's own tokens)."""
        return unlikelihood_loss(source, target, self.rank_alpha, pad, self.report_accuracy)

    def extras(self, sums, target):
        """The penalty and the number of candidates."""
        return {"ul_penalty": sums["penalty"], "ul_candidates": sums["candidates"]}


@dataclass(eq=False, kw_only=True)
class LossTruncationLoss(DivgenLoss):
    """Loss truncation: label-smoothed cross-entropy (``eps / (V - 1)``) over the
    sequences whose mean token NLL is at most the (1 - dropc) quantile of the recent
    sequence losses (plain MLE until ``min_count`` have been seen).

    The history is per update (``state.global_step``), in this process only: several
    data-parallel processes are refused. Like fairseq's checkpoints, the trainer's do
    not keep it: a resumed run rebuilds it (with a warning)."""

    criterion: ClassVar[str] = "loss_truncation"

    label_smoothing: float = 0.0
    dropc: float = 0.4
    min_count: int = 10000
    recompute: int = 10000

    def check(self):
        """Ranges of the fairseq flags."""
        super().check()
        check_range("label_smoothing", self.label_smoothing, 0.0, 1.0)
        check_range("dropc", self.dropc, 0.0, 1.0, high_open=True)
        if not (isinstance(self.min_count, int) and self.min_count >= 0):
            raise ValueError(f"min_count must be an integer >= 0, got {self.min_count!r}")
        if not (isinstance(self.recompute, int) and self.recompute >= 1):
            raise ValueError(f"recompute must be an integer >= 1, got {self.recompute!r}")

    def __post_init__(self):
        super().__post_init__()
        self.history = LossHistory(self.dropc, self.min_count, self.recompute)
        self._checked_resume = False

    def on_train_begin(self, args, state, control, **kwargs):
        """A new history for each ``train()`` (as a fairseq run starts or resumes with an
        empty one); several processes are refused before the first step."""
        super().on_train_begin(args, state, control, **kwargs)
        _single_process(getattr(args, "world_size", 1))
        self.history = LossHistory(self.dropc, self.min_count, self.recompute)
        self._checked_resume = False

    def _check_resume(self, step: int) -> None:
        if self._checked_resume:
            return
        self._checked_resume = True
        if step > 0:
            logger.warning(
                "LossTruncationLoss: training resumes at update %d; the trainer's checkpoints "
                "do not keep the loss history, so it is rebuilt: plain MLE until %d new "
                "sequence losses have been seen (min_count), then truncation",
                step,
                self.min_count,
            )

    def sums(self, source, target, pad, training, degenerative=None):
        """The truncated sums under the cutoff in force; in training the batch's
        sequence losses are recorded for the next updates."""
        device = target.device
        if training:
            step = self.num_updates("loss truncation's per-update history")
            if torch.distributed.is_available() and torch.distributed.is_initialized():
                _single_process(torch.distributed.get_world_size())
            self._check_resume(step)
            self.history.to(device).begin(step)
        cutoff = self.history.cutoff_on(device)
        sums = loss_truncation_loss(
            source,
            target,
            cutoff,
            self.label_smoothing,
            pad,
            truncate=training,
            accuracy=self.report_accuracy,
        )
        if training:
            sums["loss"], used = mark_used(sums["loss"])
            self.history.add(sums["sequence_nll"], used)
        sums["cutoff"] = cutoff
        return sums

    def extras(self, sums, target):
        """Kept sequences and tokens, the sequences, and the cutoff times them."""
        sentences = target.size(0)
        active = torch.isfinite(sums["cutoff"])
        return {
            "lt_kept_sentences": sums["kept_sequences"],
            "lt_kept_tokens": sums["kept_tokens"],
            "sentences": torch.tensor(sentences),
            "lt_active": active.long() * sentences,
            "lt_cutoff": torch.where(active, sums["cutoff"], 0.0) * sentences,
        }

    def summary(self, totals):
        """Fractions of sequences and tokens kept, and the cutoff while it is finite."""
        kept_s, kept_t = totals.pop("lt_kept_sentences", 0.0), totals.pop("lt_kept_tokens", 0.0)
        sentences, active = totals.pop("sentences", 0.0), totals.pop("lt_active", 0.0)
        cutoff = totals.pop("lt_cutoff", 0.0)
        out = super().summary(totals)
        if sentences:
            out["lt_kept_ratio"] = kept_s / sentences
        if totals.get("tokens"):
            out["lt_kept_token_ratio"] = kept_t / totals["tokens"]
        if active:
            out["lt_cutoff"] = cutoff / active
        return out


def _single_process(world_size: int) -> None:
    if world_size > 1:
        raise ValueError(
            f"LossTruncationLoss runs in one process only in the transformers adapter (got "
            f"{world_size} data-parallel processes): its history would differ between "
            "processes. Train it on one process (gradient_accumulation_steps for larger "
            "batches), or with fairseq's --criterion loss_truncation, which gathers it"
        )


@dataclass(eq=False, kw_only=True)
class MixceLoss(DivgenLoss):
    """MixCE (token-level approximation): ``sum_t (eta + (1 - eta) p_t) NLL_t`` with the
    detached model probability ``p_t`` of the gold token."""

    criterion: ClassVar[str] = "mixce"

    mixing_ratio: float = 0.5

    def check(self):
        """Ranges of the fairseq flags."""
        super().check()
        check_range("mixing_ratio", self.mixing_ratio, 0.0, 1.0)

    def sums(self, source, target, pad, training, degenerative=None):
        """MixCE's sums."""
        return mixce_loss(source, target.reshape(-1), self.mixing_ratio, pad, self.report_accuracy)

    def extras(self, sums, target):
        """The token weights' sum."""
        return {"mixce_weight": sums["weight"]}


@dataclass(eq=False, kw_only=True)
class ErrorNormTruncationLoss(DivgenLoss):
    """ENT-Threshold: label-smoothed cross-entropy (``eps / (V - 1)``) without the tokens
    whose error norm ``||q - onehot(y)||_2`` exceeds ``token_prune_threshold``, once more
    than ``start_prune_iteration`` updates are done (plain MLE before, and in evaluation)."""

    criterion: ClassVar[str] = "error_norm_truncation"

    label_smoothing: float = 0.0
    token_prune_threshold: Optional[float] = None
    start_prune_iteration: int = 0

    def check(self):
        """Ranges of the fairseq flags; the threshold is required."""
        super().check()
        check_range("label_smoothing", self.label_smoothing, 0.0, 1.0)
        if self.token_prune_threshold is None:
            raise ValueError(
                "ErrorNormTruncationLoss needs token_prune_threshold=T, T in (0, sqrt 2] = "
                "(0, 1.4142...]: tokens whose error norm exceeds T are dropped"
            )
        check_range(
            "token_prune_threshold",
            self.token_prune_threshold,
            0.0,
            SQRT2,
            low_open=True,
            why=" (the error norm lies in [0, sqrt 2]; sqrt 2 never truncates)",
        )
        check_non_negative("start_prune_iteration", self.start_prune_iteration)

    def sums(self, source, target, pad, training, degenerative=None):
        """ENT's sums; truncating only in training after the start iteration."""
        self._truncating = training and (
            self.num_updates("start_prune_iteration") > self.start_prune_iteration
        )
        return error_norm_truncated_loss(
            source,
            target.reshape(-1),
            self.token_prune_threshold,
            self.label_smoothing,
            pad,
            self._truncating,
            self.report_accuracy,
        )

    def extras(self, sums, target):
        """Tokens within the threshold, the norms, and the tokens trained truncated."""
        tokens = target.ne(IGNORE_INDEX).sum()
        return {
            "ent_kept_ratio": sums["kept"],
            "ent_norm": sums["norm"],
            "ent_active": tokens if self._truncating else torch.zeros_like(tokens),
        }
