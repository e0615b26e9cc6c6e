"""Product of experts with a frozen degenerative model (stage 2 of LFD).

LFD: "Learning to Diversify Neural Text Generation via Degenerative Model"
(arXiv 2309.12619). ``log p_poe = log_softmax(log q_main + beta * log q_degen)``;
since log_softmax is shift invariant this equals
``log_softmax(z_main + beta * log q_degen)``, so the main model's own softmax is
never needed for the PoE term.
"""
from typing import Tuple

import torch
from torch import Tensor


def poe_nll_loss(
    main_logits: Tensor,
    degen_lprobs: Tensor,
    target: Tensor,
    beta: float,
    mle_weight: float,
    epsilon: float = 0.0,
    ignore_index: int = -100,
) -> Tuple[Tensor, Tensor, Tensor]:
    """Summed LFD loss ``sum_t -log p_poe(y_t) + lambda * sum_t nll_main_t``.

    ``main_logits``: (N, V) scores of the main model (any dtype; reduced in fp32),
    ``degen_lprobs``: (N, V) log-probabilities of the frozen degenerative model
    (no gradient), ``target``: (N,). With ``epsilon`` > 0 the PoE term is label
    smoothed as in fairseq (``eps_i = eps / (V - 1)``).
    Returns ``(loss, poe_nll, main_nll)`` as sums over non-pad tokens.
    """
    target = target.view(-1, 1)
    pad = target.eq(ignore_index)
    # No fp32 copy of the logits: the add promotes fp16 + fp32 to fp32 as it goes,
    # and log_softmax(dtype=float32) upcasts inside the kernel.
    if beta != 0.0:
        # add(alpha=) fuses the scaling: no (N, V) temporary for beta * log q_degen.
        poe_lprobs = torch.log_softmax(
            torch.add(main_logits, degen_lprobs.detach().float(), alpha=beta), dim=-1
        )
    else:
        poe_lprobs = torch.log_softmax(main_logits, dim=-1, dtype=torch.float32)
    poe_nll = (-poe_lprobs.gather(-1, target)).masked_fill(pad, 0.0).sum()
    loss = poe_nll
    if epsilon > 0.0:
        eps_i = epsilon / (poe_lprobs.size(-1) - 1)
        smooth = (-poe_lprobs.sum(-1, keepdim=True)).masked_fill(pad, 0.0).sum()
        loss = (1.0 - epsilon - eps_i) * poe_nll + eps_i * smooth
    if beta == 0.0:
        main_nll = poe_nll
    else:
        main_lprobs = torch.log_softmax(main_logits, dim=-1, dtype=torch.float32)
        main_nll = (-main_lprobs.gather(-1, target)).masked_fill(pad, 0.0).sum()
    if mle_weight != 0.0:
        loss = loss + mle_weight * main_nll
    return loss, poe_nll, main_nll
