"""``tailr_naive_reference``: a benchmark-only TaiLr written the naive way.

TaiLr: Ji et al., "Tailoring Language Generation Models under Total Variation
Distance", ICLR 2023. Same objective as ``--criterion tailr``, but computed as the
authors' release computes it: a full softmax over the vocabulary is materialised
only to read the gold token's probability, and the log-probabilities that the loss
uses are the log of a second softmax, differentiated by autograd. It exists so the
benchmark can show what the closed form (:func:`fairseq_divgen.losses.tailr_loss`)
saves; it is registered only when the benchmark imports this module, never by
``import fairseq_divgen``.
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

    def compute_loss(self, model, source, target, sample):
        """TaiLr's sums the naive way, from the model's logits (unfused only)."""
        self._gamma_now = self.current_gamma(model.training)
        lprobs = torch.log_softmax(source, dim=-1, dtype=torch.float32)
        loss, nll, weight = naive_tailr_loss(
            lprobs, target.reshape(-1), self._gamma_now, self.min_weight, self.eps, self.padding_idx
        )
        return {"loss": loss, "nll": nll.detach(), "weight": weight}
