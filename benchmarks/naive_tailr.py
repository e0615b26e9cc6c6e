"""``tailr_naive_reference``: a benchmark-only TaiLr written the naive way.

TaiLr: Ji et al., "Tailoring Language Generation Models under Total Variation
Distance", ICLR 2023. Same objective as ``--criterion tailr``, but computed as the
authors' release is described (ALGORITHMS / MEASUREMENTS notes of this project): a
full softmax over the vocabulary is materialised only to read the gold token's
probability, and the log-probabilities that the loss uses are the log of a second
softmax. It exists so the benchmark can show what the fused form
(:func:`fairseq_divgen.losses.tailr_loss`) saves; it is registered only when the
benchmark imports this module, never by ``import fairseq_divgen``.
"""
import torch
from fairseq.criterions import register_criterion

from fairseq_divgen.criterions.tailr import TailrConfig, TailrCriterion

NAME = "tailr_naive_reference"


def naive_tailr_loss(lprobs, target, gamma, min_weight, epsilon, ignore_index):
    """Summed TaiLr loss through two extra (N, V) softmaxes; ``(loss, nll, weight_sum)``."""
    target = target.view(-1, 1)
    pad = target.eq(ignore_index)
    probs = torch.softmax(lprobs, dim=-1)  # (N, V), only to read one entry per row
    p = probs.gather(-1, target).detach()
    weight = (p / (gamma + (1.0 - gamma) * p)).clamp(min_weight, 1.0)
    weight = weight.masked_fill(pad, 0.0)
    log_q = torch.log(torch.softmax(lprobs, dim=-1))  # (N, V) twice more, kept for backward
    nll = (-log_q.gather(-1, target)).masked_fill(pad, 0.0)
    smooth = (-log_q.sum(-1, keepdim=True)).masked_fill(pad, 0.0)
    loss = (1.0 - epsilon) * (weight * nll).sum() + (epsilon / lprobs.size(-1)) * smooth.sum()
    return loss, nll.sum(), weight.sum()


@register_criterion(NAME, dataclass=TailrConfig)
class NaiveTailrReferenceCriterion(TailrCriterion):
    """TaiLr with the naive two-softmax computation (benchmark reference only)."""

    loss_function = staticmethod(naive_tailr_loss)
