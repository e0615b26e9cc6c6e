"""The LFD objective: a product of experts with a frozen degenerative model (stage 2).

Hong et al., "Learning to Diversify Neural Text Generation via Degenerative Model"
(arXiv 2309.12619). The main model (logits ``z``) is trained through

    log p_poe(. | t) = log_softmax(log q_main + beta * log q_degen)
                     = log_softmax(z + beta * z_degen)

(log_softmax is shift invariant, so the degenerative model's logits serve as well as
its log-probabilities), plus ``lambda`` times the main model's own NLL.

``main_eos=True`` keeps the end-of-sentence decision out of the product: the
probability of EOS is the main model's own, and only the choice among the other
symbols is a product of experts,

    p(eos) = q_main(eos),
    p(v)   = (1 - q_main(eos)) * q_main(v) q_degen(v)^beta / sum_{u != eos} q_main(u) q_degen(u)^beta.

A degenerative model is sure of EOS where the data is not, and under the plain
product the main model learns to cancel that by giving EOS too little probability
everywhere; generating alone, it then does not stop (docs/lfd.md).

Every term is computed from reductions over the vocabulary (log-sum-exp, gather,
sum): no log-softmax of the product is materialised.
"""
from typing import NamedTuple, Optional

import torch
from torch import Tensor


class LfdLoss(NamedTuple):
    """Sums over non-pad tokens (the loss and what the criterion logs)."""

    loss: Tensor  # the objective: PoE term (label smoothed) + lambda * main NLL
    poe_nll: Tensor  # -log p_poe(y_t)
    main_nll: Tensor  # -log q_main(y_t): what generation uses
    main_eos_nll: Tensor  # -log q_main(eos) at gold-EOS positions (0 without eos_index)
    degen_nll: Optional[Tensor]  # -log q_degen(y_t) (None without the degenerative model)


def logsumexp_without(x: Tensor, col: int) -> Tensor:
    """``logsumexp`` over the last dimension leaving out column ``col`` (keepdim)."""
    left = x[..., :col].logsumexp(-1, keepdim=True)
    right = x[..., col + 1 :].logsumexp(-1, keepdim=True)
    return torch.logaddexp(left, right)


def lfd_loss(
    main_logits: Tensor,
    degen_logits: Optional[Tensor],
    target: Tensor,
    beta: float,
    mle_weight: float,
    epsilon: float = 0.0,
    ignore_index: int = -100,
    eos_index: Optional[int] = None,
    main_eos: bool = False,
) -> LfdLoss:
    """Summed LFD loss ``sum_t -log p_poe(y_t) + lambda * sum_t -log q_main(y_t)``.

    ``main_logits``: (N, V) scores of the main model (any dtype; reduced in fp32).
    ``degen_logits``: (N, V) logits (or log-probabilities) of the frozen degenerative
    model, never differentiated; may be None when ``beta`` is 0. ``target``: (N,).
    With ``epsilon`` > 0 the PoE term is label smoothed as fairseq's
    ``label_smoothed_nll_loss`` does (``eps_i = eps / (V - 1)``). ``eos_index`` is
    needed for ``main_eos`` and for the ``main_eos_nll`` diagnostic.
    """
    if main_eos and eos_index is None:
        raise ValueError("main_eos needs eos_index")
    if beta != 0.0 and degen_logits is None:
        raise ValueError("beta != 0 needs the degenerative model's logits")
    target = target.view(-1, 1)
    pad = target.eq(ignore_index)
    vocab = main_logits.size(-1)
    # The main model's log-softmax enters the objective through lambda, main_eos or
    # beta = 0; otherwise it is only logged and is not kept for backward.
    needed = mle_weight != 0.0 or main_eos or beta == 0.0
    with torch.set_grad_enabled(needed and torch.is_grad_enabled()):
        main_lprobs = torch.log_softmax(main_logits, dim=-1, dtype=torch.float32)
    main_gold = main_lprobs.gather(-1, target)
    main_nll = (-main_gold).masked_fill(pad, 0.0).sum()
    if eos_index is not None:
        main_eos_nll = (-main_gold).masked_fill(target.ne(eos_index), 0.0).sum()
    else:
        main_eos_nll = main_nll.new_zeros(())

    degen_nll = None
    if degen_logits is not None:
        # One fp32 (N, V) buffer: the degenerative scores, then (in place) the product's.
        scores = degen_logits.detach().to(torch.float32, copy=True)
        with torch.no_grad():
            degen_gold = scores.gather(-1, target) - scores.logsumexp(-1, keepdim=True)
            degen_nll = (-degen_gold).masked_fill(pad, 0.0).sum()
    if beta != 0.0:
        scores.mul_(beta).add_(main_logits)  # z + beta * z_degen; differentiable in z
    else:
        scores = main_lprobs  # the product is the main model itself

    gold = scores.gather(-1, target)
    if not main_eos:
        lse = scores.logsumexp(-1, keepdim=True)
        poe_gold = gold - lse
        smooth_sum = None
        if epsilon > 0.0:
            smooth_sum = vocab * lse - scores.sum(-1, keepdim=True)  # -sum_v log p_poe(v)
    else:
        e = eos_index
        others = logsumexp_without(scores, e)  # log sum_{u != eos} exp(score_u)
        log_eos = main_lprobs[:, e : e + 1]  # log q_main(eos)
        log_not_eos = logsumexp_without(main_lprobs, e)  # log(1 - q_main(eos)), stably
        poe_gold = torch.where(target.eq(e), log_eos, gold - others + log_not_eos)
        smooth_sum = None
        if epsilon > 0.0:
            rest = scores.sum(-1, keepdim=True) - scores[:, e : e + 1]
            smooth_sum = -(log_eos + rest - (vocab - 1) * (others - log_not_eos))
    poe_nll = (-poe_gold).masked_fill(pad, 0.0).sum()
    loss = poe_nll
    if smooth_sum is not None:
        eps_i = epsilon / (vocab - 1)
        smooth = smooth_sum.masked_fill(pad, 0.0).sum()
        loss = (1.0 - epsilon - eps_i) * poe_nll + eps_i * smooth
    if mle_weight != 0.0:
        loss = loss + mle_weight * main_nll
    return LfdLoss(loss, poe_nll, main_nll, main_eos_nll, degen_nll)
