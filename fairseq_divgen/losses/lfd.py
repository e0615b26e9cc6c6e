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

The loss and its gradient with respect to the main model's logits are computed
together, in chunks of tokens, in closed form (no autograd graph over the
vocabulary): with ``s = z + beta * z_degen``, ``P = softmax(s)``, ``Q = softmax(z)`` and
fairseq's smoothing ``eps_i = eps / (V - 1)``,

    dL/dz = (1 - eps - eps_i) (P - onehot(y)) + eps_i (V P - 1) + lambda (Q - onehot(y)),

and with EOS outside the product (``R`` = softmax of ``s`` over the symbols other than
EOS, ``Q'`` = the same of ``z``, both 0 at EOS):

    d(-log p(y))/dz = Q - onehot(eos)               if y = eos,
                      R - onehot(y) + Q - Q'        otherwise;
    d(-sum_v log p(v))/dz = V Q - 1 + (V - 1) (R - Q').

Only that gradient, one (N, V) tensor, is kept for the backward pass: no
log-softmax of either model, no product distribution, and no vocabulary-sized work
for the degenerative model beyond its logits.
"""
from typing import NamedTuple, Optional, Union

import torch
from torch import Tensor

from .fused_output import Projection

# Rows per chunk: about this many elements per (rows, V) temporary (16 MiB in fp32).
CHUNK_ELEMENTS = 1 << 22
# On the CPU the elementwise math of a chunk runs on blocks of about this many
# elements (1 MiB in fp32): its dozen (rows, V) temporaries then stay in the core's
# caches: measured about twice as fast as on whole chunks at V = 32k (python -m
# benchmarks.loss_stage). Accelerators take a chunk at once (fewer kernel launches).
CPU_BLOCK_ELEMENTS = 1 << 18


class LfdLoss(NamedTuple):
    """Sums over non-pad tokens (the loss and what the criterion logs)."""

    loss: Tensor  # the objective: PoE term (label smoothed) + lambda * main NLL
    poe_nll: Tensor  # -log p_poe(y_t)
    main_nll: Tensor  # -log q_main(y_t): what generation uses
    main_eos_nll: Tensor  # -log q_main(eos) at gold-EOS positions (0 without eos_index)
    degen_nll: Optional[Tensor]  # -log q_degen(y_t), computed without gradient only (validation)


def _shifted_exp(x: Tensor, skip: Optional[int] = None):
    """``(m, e, total)`` of the rows of ``x``: ``m`` their maximum, ``e = exp(x - m)``
    (a new tensor) and ``total`` its row sums, so ``logsumexp = m + log(total)`` and
    ``softmax = e / total``. With ``skip``, column ``skip`` of ``e`` is set to 0 and
    left out of ``total`` (a sum of the other terms: no cancellation); its value is
    returned as a fourth entry."""
    m = x.amax(-1, keepdim=True)
    e = (x - m).exp_()
    if skip is None:
        return m, e, e.sum(-1, keepdim=True)
    e_skip = e[:, skip : skip + 1].clone()
    e[:, skip] = 0.0
    return m, e, e.sum(-1, keepdim=True), e_skip


def _scaled(e: Tensor, coef: Tensor, out: Optional[Tensor]) -> Tensor:
    """``e * coef`` (per-row ``coef``), in place or written into ``out``."""
    return e.mul_(coef) if out is None else torch.mul(e, coef, out=out)


def _chunk(z, zd, t, beta, lam, eps, pad, eos, main_eos, want_grad, out=None):
    """Sums (loss, poe_nll, main_nll, main_eos_nll, degen_nll) and dL/dz of some rows.

    Everything in fp32 (fp64 for fp64 inputs); ``zd`` may be None (beta = 0). The
    gradient goes into ``out`` when given (an accumulator-dtype tensor of ``z``'s
    shape). On the CPU the rows are taken ``CPU_BLOCK_ELEMENTS`` elements at a time.
    """
    n = z.size(0)
    rows = max(1, CPU_BLOCK_ELEMENTS // max(1, z.size(-1))) if z.device.type == "cpu" else n
    if n <= rows:
        return _block(z, zd, t, beta, lam, eps, pad, eos, main_eos, want_grad, out)
    acc = torch.promote_types(z.dtype, torch.float32)
    grad = None
    if want_grad:
        grad = out if out is not None else torch.empty(z.shape, dtype=acc, device=z.device)
    sums = torch.zeros(5, dtype=acc, device=z.device)
    for start in range(0, n, rows):
        sl = slice(start, min(start + rows, n))
        part, _ = _block(
            z[sl], None if zd is None else zd[sl], t[sl], beta, lam, eps, pad, eos,
            main_eos, want_grad, None if grad is None else grad[sl],
        )  # fmt: skip
        sums += part
    return sums, grad


def _block(z, zd, t, beta, lam, eps, pad, eos, main_eos, want_grad, out=None):
    """:func:`_chunk` of rows that are taken at once (the gradient into ``out`` if given).

    The gradient is assembled from the two unnormalised exponentials with per-row
    coefficients (normalisers, pad mask and weights folded into them), in three
    passes over the block, and pad rows come out 0 without a pass of their own.
    """
    acc = torch.promote_types(z.dtype, torch.float32)
    z = z.to(acc)
    vocab = z.size(-1)
    t = t.view(-1, 1)
    padm = t.eq(pad)
    keep = (~padm).to(acc)  # per-row factor of every gradient term
    eps_i = eps / (vocab - 1)
    w = 1.0 - eps - eps_i  # weight of the NLL term of fairseq's label smoothing
    degen_nll = z.new_zeros(())
    if zd is not None:
        zd = zd.to(acc)
        if not want_grad:  # frozen: its NLL is a validation diagnostic (one exp pass)
            degen_nll = (zd.logsumexp(-1, keepdim=True) - zd.gather(-1, t)).masked_fill(padm, 0.0).sum()
    s = torch.add(z, zd, alpha=beta) if (zd is not None and beta != 0.0) else z  # never written
    z_gold, s_gold = z.gather(-1, t), s.gather(-1, t)
    s_sum = s.sum(-1, keepdim=True) if eps > 0.0 else None
    grad = None
    smooth = None
    if not main_eos:
        e_z = None
        if want_grad and lam != 0.0:
            m_z, e_z, total_z = _shifted_exp(z)
            lse_z = m_z + total_z.log()
        else:
            lse_z = z.logsumexp(-1, keepdim=True)
        if want_grad:
            m_s, e_s, total_s = _shifted_exp(s)
            lse_s = m_s + total_s.log()
        else:
            lse_s = s.logsumexp(-1, keepdim=True)
        poe_gold = s_gold - lse_s
        if eps > 0.0:
            smooth = vocab * lse_s - s_sum
        if want_grad:
            # w (P - onehot) + eps_i (V P - 1) + lambda (Q - onehot)
            grad = _scaled(e_s, keep * ((w + vocab * eps_i) / total_s), out)  # (w + V eps_i) P
            if e_z is not None:
                grad.addcmul_(e_z, keep * (lam / total_z))  # + lambda Q
            if eps > 0.0:
                grad.sub_(keep * eps_i)
            grad.scatter_add_(-1, t, keep * -(w + lam))
    else:
        e = eos
        is_eos = t.eq(e)
        # Q' (softmax of z without EOS, 0 at EOS) = e_z / total_z; B = its log-normaliser
        m_z, e_z, total_z, ez_eos = _shifted_exp(z, skip=e)
        lse_z_rest = m_z + total_z.log()
        lse_z = torch.logaddexp(lse_z_rest, m_z + ez_eos.log())
        log_eos = z[:, e : e + 1] - lse_z  # log Q(eos)
        log_not_eos = lse_z_rest - lse_z  # log(1 - Q(eos)), stably
        m_s, e_s, total_s, _ = _shifted_exp(s, skip=e)  # R = e_s / total_s (0 at EOS)
        others = m_s + total_s.log()  # A
        poe_gold = torch.where(is_eos, log_eos, s_gold - others + log_not_eos)
        if eps > 0.0:
            smooth = -(log_eos + (s_sum - s[:, e : e + 1]) - (vocab - 1) * (others - log_not_eos))
        if want_grad:
            # w [R + Q - Q' (y != eos) | Q (y = eos)] - (w + lambda) onehot(y)
            #   + eps_i [V Q - 1 + (V - 1)(R - Q')] + lambda Q
            # = c (R - Q') + k Q - eps_i - (w + lambda) onehot(y),
            # with c = w [y != eos] + (V - 1) eps_i and k = w + V eps_i + lambda.
            # Off EOS, Q = (1 - Q(eos)) Q', so that is c R + (k (1 - Q(eos)) - c) Q' - eps_i;
            # at EOS (R = Q' = 0 there) it is k Q(eos) - eps_i.
            c = (~is_eos).to(acc) * w + (vocab - 1) * eps_i
            k = w + vocab * eps_i + lam
            grad = _scaled(e_s, keep * c / total_s, out)
            grad.addcmul_(e_z, keep * (k * log_not_eos.exp() - c) / total_z)
            if eps > 0.0:
                grad.sub_(keep * eps_i)
            grad[:, e : e + 1] = keep * (k * log_eos.exp() - eps_i)
            grad.scatter_add_(-1, t, keep * -(w + lam))
    main_gold = z_gold - lse_z
    main_nll = (-main_gold).masked_fill(padm, 0.0).sum()
    main_eos_nll = (-main_gold).masked_fill(t.ne(eos), 0.0).sum() if eos is not None else main_nll.new_zeros(())
    poe_nll = (-poe_gold).masked_fill(padm, 0.0).sum()
    loss = poe_nll
    if smooth is not None:
        loss = w * poe_nll + eps_i * smooth.masked_fill(padm, 0.0).sum()
    if lam != 0.0:
        loss = loss + lam * main_nll
    return torch.stack([loss, poe_nll, main_nll, main_eos_nll, degen_nll]), grad


def degen_rows(zd: Union[Tensor, Projection, None], rows: slice) -> Optional[Tensor]:
    """The degenerative model's logits of ``rows``: a slice of its (N, V) logits, or
    made from its features (a :class:`Projection`) only for those rows."""
    if zd is None:
        return None
    return zd.logits(rows) if isinstance(zd, Projection) else zd[rows]


class _LfdObjective(torch.autograd.Function):
    """The LFD sums; the gradient w.r.t. the main logits is computed in the forward."""

    @staticmethod
    def forward(ctx, z, zd, t, beta, lam, eps, pad, eos, main_eos):
        rows = max(1, CHUNK_ELEMENTS // max(1, z.size(-1)))
        want_grad = ctx.needs_input_grad[0]
        acc = torch.promote_types(z.dtype, torch.float32)
        grad = torch.empty(z.shape, dtype=acc, device=z.device) if want_grad else None
        sums = torch.zeros(5, dtype=acc, device=z.device)
        for start in range(0, z.size(0), rows):
            stop = min(start + rows, z.size(0))
            part, _ = _chunk(
                z[start:stop], degen_rows(zd, slice(start, stop)), t[start:stop],
                beta, lam, eps, pad, eos, main_eos, want_grad,
                out=None if grad is None else grad[start:stop],
            )  # fmt: skip
            sums += part
        ctx.save_for_backward(grad)
        ctx.z_dtype = z.dtype
        stats = sums[1:]
        ctx.mark_non_differentiable(stats)
        return sums[0].clone(), stats

    @staticmethod
    def backward(ctx, grad_loss, _grad_stats):
        (grad,) = ctx.saved_tensors
        # In place: the stored gradient is used once (fairseq never retains the graph),
        # so backward needs no second (N, V) tensor in fp32.
        return grad.mul_(grad_loss).to(ctx.z_dtype), None, None, None, None, None, None, None, None


def _main_model_only(z, zd, target, lam, eps, pad, eos) -> LfdLoss:
    """beta = 0: the product is the main model itself, so the objective is fairseq's
    label-smoothed cross-entropy plus lambda times the NLL (plain autograd)."""
    target = target.view(-1, 1)
    padm = target.eq(pad)
    lprobs = torch.log_softmax(z, dim=-1, dtype=torch.float32)
    gold = lprobs.gather(-1, target)
    nll = (-gold).masked_fill(padm, 0.0).sum()
    loss = nll
    if eps > 0.0:
        eps_i = eps / (lprobs.size(-1) - 1)
        smooth = (-lprobs.sum(-1, keepdim=True)).masked_fill(padm, 0.0).sum()
        loss = (1.0 - eps - eps_i) * nll + eps_i * smooth
    if lam != 0.0:
        loss = loss + lam * nll
    with torch.no_grad():
        eos_nll = (-gold).masked_fill(target.ne(eos), 0.0).sum() if eos is not None else nll.new_zeros(())
        degen_nll = None
        if zd is not None:
            d = degen_rows(zd, slice(None)).float()
            degen_nll = (d.logsumexp(-1, keepdim=True) - d.gather(-1, target)).masked_fill(padm, 0.0).sum()
    return LfdLoss(loss, nll.detach(), nll.detach(), eos_nll, degen_nll)


def lfd_loss(
    main_logits: Tensor,
    degen_logits: Union[Tensor, Projection, None],
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
    model, or a :class:`Projection` of its features that makes them a chunk of rows at
    a time (so its (N, V) logits never exist); never differentiated; may be None when
    ``beta`` is 0. ``target``: (N,).
    With ``epsilon`` > 0 the PoE term is label smoothed as fairseq's
    ``label_smoothed_nll_loss`` does (``eps_i = eps / (V - 1)``). ``eos_index`` is
    needed for ``main_eos`` and for the ``main_eos_nll`` diagnostic. Only ``loss``
    carries a gradient (to ``main_logits``).
    """
    if main_eos and eos_index is None:
        raise ValueError("main_eos needs eos_index")
    if beta != 0.0 and degen_logits is None:
        raise ValueError("beta != 0 needs the degenerative model's logits")
    zd = degen_logits.detach() if isinstance(degen_logits, Tensor) else degen_logits
    if beta == 0.0 and not main_eos:
        return _main_model_only(main_logits, zd, target, mle_weight, epsilon, ignore_index, eos_index)
    loss, stats = _LfdObjective.apply(
        main_logits, zd, target.reshape(-1), float(beta), float(mle_weight),
        float(epsilon), ignore_index, eos_index, bool(main_eos),
    )  # fmt: skip
    poe_nll, main_nll, main_eos_nll, degen_nll = stats.unbind(0)
    no_degen_nll = zd is None or (torch.is_grad_enabled() and main_logits.requires_grad)
    return LfdLoss(loss, poe_nll.detach(), main_nll.detach(), main_eos_nll.detach(),
                   None if no_degen_nll else degen_nll.detach())  # fmt: skip
