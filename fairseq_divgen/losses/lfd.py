"""The LFD objective: a product of experts with a frozen degenerative model (stage 2).

Hong et al., "Learning to Diversify Neural Text Generation via Degenerative Model"
(arXiv 2309.12619). The main model (logits ``z``) is trained through

    log p_poe(. | t) = log_softmax(log q_main + beta * log q_degen)
                     = log_softmax(z + beta * z_degen)

(log_softmax is shift invariant, so the degenerative model's logits serve as well as
its log-probabilities), plus ``lambda`` times the main model's own NLL.

By default (``eos_in_product=False``) the end-of-sentence decision stays out of the
product: the probability of EOS is the main model's own, and only the choice among
the other symbols is a product of experts,

    p(eos) = q_main(eos),
    p(v)   = (1 - q_main(eos)) * q_main(v) q_degen(v)^beta / sum_{u != eos} q_main(u) q_degen(u)^beta.

A degenerative model is sure of EOS where the data is not, and under the plain
product the main model learns to cancel that by giving EOS too little probability
everywhere; generating alone, it then does not stop (docs/lfd.md).
``eos_in_product=True`` is the paper's objective exactly.

The gradient with respect to the main model's logits, in closed form: with
``s = z + beta * z_degen``, ``P = softmax(s)``, ``Q = softmax(z)`` and fairseq's smoothing
``eps_i = eps / (V - 1)``,

    dL/dz = (1 - eps - eps_i) (P - onehot(y)) + eps_i (V P - 1) + lambda (Q - onehot(y)),

and with EOS outside the product (``R`` = softmax of ``s`` over the symbols other than
EOS, ``Q'`` = the same of ``z``, both 0 at EOS):

    d(-log p(y))/dz = Q - onehot(eos)               if y = eos,
                      R - onehot(y) + Q - Q'        otherwise;
    d(-sum_v log p(v))/dz = V Q - 1 + (V - 1) (R - Q').

No log-softmax of either model and no product distribution is kept; the degenerative
model costs nothing vocabulary-sized beyond its logits (docs/algorithms.md).
"""

from typing import Dict, Optional, Union

import torch
from torch import Tensor

from .chunked import ChunkObjective, FrozenLogits, Projection, Source, chunked_loss, requires_grad
from .chunking import block_rows


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


class LfdObjective(ChunkObjective):
    """LFD's objective over chunks of the main model's logits; the degenerative model's
    logits of the same rows come from ``degenerative`` (a :class:`FrozenLogits`, or None
    when ``beta`` is 0). ``degen_nll``, its own NLL, is computed only without gradient
    (validation)."""

    names = ("loss", "poe_nll", "main_nll", "main_eos_nll", "degen_nll")

    def __init__(
        self,
        target,
        degenerative: Optional[FrozenLogits],
        beta,
        mle_weight,
        epsilon,
        pad,
        eos=None,
        eos_in_product=False,
        accuracy=False,
    ):
        super().__init__(target, pad, accuracy)
        if not eos_in_product and eos is None:
            raise ValueError("EOS outside the product (eos_in_product=False) needs eos_index")
        if beta != 0.0 and degenerative is None:
            raise ValueError("beta != 0 needs the degenerative model's logits")
        self.degenerative = degenerative
        self.beta, self.lam, self.eps = float(beta), float(mle_weight), float(epsilon)
        self.eos, self.eos_in_product = eos, bool(eos_in_product)

    def chunk(self, z, t, real, rows, want_grad, out):
        n = z.size(0)
        zd = None if self.degenerative is None else self.degenerative(rows)
        block = block_rows(z.device, z.size(-1), n)
        if block >= n:
            return self._block(z, zd, t, real, want_grad, out)
        grad = None
        if want_grad:
            grad = out if out is not None else torch.empty_like(z)
        sums = z.new_zeros(len(self.names))
        for start in range(0, n, block):
            sl = slice(start, min(start + block, n))
            part, _ = self._block(
                z[sl],
                None if zd is None else zd[sl],
                t[sl],
                real[sl],
                want_grad,
                None if grad is None else grad[sl],
            )
            sums += part
        return sums, grad

    def _block(self, z, zd, t, real, want_grad, out):
        """Sums and dL/dz of rows taken at once (the gradient into ``out`` if given),
        assembled from the two unnormalised exponentials with per-row coefficients
        (normalisers, pad mask and weights folded into them), in three passes."""
        beta, lam, eps, eos = self.beta, self.lam, self.eps, self.eos
        vocab = z.size(-1)
        padm = ~real
        keep = real.to(z.dtype)  # per-row factor of every gradient term
        eps_i = eps / (vocab - 1)
        w = 1.0 - eps - eps_i  # weight of the NLL term of fairseq's label smoothing
        degen_nll = z.new_zeros(())
        if zd is not None:
            zd = zd.to(z.dtype)
            if not want_grad:  # frozen: its NLL is a validation diagnostic (one exp pass)
                degen_gold = zd.logsumexp(-1, keepdim=True) - zd.gather(-1, t)
                degen_nll = degen_gold.masked_fill(padm, 0.0).sum()
        s = torch.add(z, zd, alpha=beta) if (zd is not None and beta != 0.0) else z  # never written
        z_gold, s_gold = z.gather(-1, t), s.gather(-1, t)
        s_sum = s.sum(-1, keepdim=True) if eps > 0.0 else None
        grad = None
        smooth = None
        if self.eos_in_product:
            if want_grad:
                m_s, e_s, total_s = _shifted_exp(s)
                lse_s = m_s + total_s.log()
                if s is z:  # beta = 0: Q = P
                    e_z, total_z, lse_z = None, total_s, lse_s
                elif lam != 0.0:
                    m_z, e_z, total_z = _shifted_exp(z)
                    lse_z = m_z + total_z.log()
                else:
                    e_z, lse_z = None, z.logsumexp(-1, keepdim=True)
            else:
                lse_s = s.logsumexp(-1, keepdim=True)
                lse_z = lse_s if s is z else z.logsumexp(-1, keepdim=True)
            poe_gold = s_gold - lse_s
            if eps > 0.0:
                smooth = vocab * lse_s - s_sum
            if want_grad:
                # w (P - onehot) + eps_i (V P - 1) + lambda (Q - onehot)
                coef = w + vocab * eps_i + (lam if s is z else 0.0)
                grad = _scaled(e_s, keep * (coef / total_s), out)
                if e_z is not None:
                    grad.addcmul_(e_z, keep * (lam / total_z))  # + lambda Q
                if eps > 0.0:
                    grad.sub_(keep * eps_i)
                grad.scatter_add_(-1, t, keep * -(w + lam))
        else:
            is_eos = t.eq(eos) & real
            # Q' (softmax of z without EOS, 0 at EOS) = e_z / total_z; its log-normaliser
            m_z, e_z, total_z, ez_eos = _shifted_exp(z, skip=eos)
            lse_z_rest = m_z + total_z.log()
            lse_z = torch.logaddexp(lse_z_rest, m_z + ez_eos.log())
            log_eos = z[:, eos : eos + 1] - lse_z  # log Q(eos)
            log_not_eos = lse_z_rest - lse_z  # log(1 - Q(eos)), stably
            m_s, e_s, total_s, _ = _shifted_exp(s, skip=eos)  # R = e_s / total_s (0 at EOS)
            others = m_s + total_s.log()
            poe_gold = torch.where(is_eos, log_eos, s_gold - others + log_not_eos)
            if eps > 0.0:
                rest = s_sum - s[:, eos : eos + 1]
                smooth = -(log_eos + rest - (vocab - 1) * (others - log_not_eos))
            if want_grad:
                # w [R + Q - Q' (y != eos) | Q (y = eos)] - (w + lambda) onehot(y)
                #   + eps_i [V Q - 1 + (V - 1)(R - Q')] + lambda Q
                # = c (R - Q') + k Q - eps_i - (w + lambda) onehot(y),
                # with c = w [y != eos] + (V - 1) eps_i and k = w + V eps_i + lambda.
                # Off EOS, Q = (1 - Q(eos)) Q', so that is c R + (k (1 - Q(eos)) - c) Q' - eps_i;
                # at EOS (R = Q' = 0 there) it is k Q(eos) - eps_i.
                c = (~is_eos).to(z.dtype) * w + (vocab - 1) * eps_i
                k = w + vocab * eps_i + lam
                grad = _scaled(e_s, keep * c / total_s, out)
                grad.addcmul_(e_z, keep * (k * log_not_eos.exp() - c) / total_z)
                if eps > 0.0:
                    grad.sub_(keep * eps_i)
                grad[:, eos : eos + 1] = keep * (k * log_eos.exp() - eps_i)
                grad.scatter_add_(-1, t, keep * -(w + lam))
        main_gold = z_gold - lse_z
        main_nll = (-main_gold).masked_fill(padm, 0.0).sum()
        if eos is not None:
            main_eos_nll = (-main_gold).masked_fill(t.ne(eos) | padm, 0.0).sum()
        else:
            main_eos_nll = main_nll.new_zeros(())
        poe_nll = (-poe_gold).masked_fill(padm, 0.0).sum()
        loss = poe_nll
        if smooth is not None:
            loss = w * poe_nll + eps_i * smooth.masked_fill(padm, 0.0).sum()
        if lam != 0.0:
            loss = loss + lam * main_nll
        return torch.stack([loss, poe_nll, main_nll, main_eos_nll, degen_nll]), grad


def lfd_loss(
    source: Source,
    degenerative: Union[Tensor, Projection, FrozenLogits, None],
    target: Tensor,
    beta: float,
    mle_weight: float,
    epsilon: float = 0.0,
    ignore_index: int = -100,
    eos_index: Optional[int] = None,
    eos_in_product: bool = False,
    accuracy: bool = False,
    rows: Optional[int] = None,
) -> Dict[str, Tensor]:
    """Summed LFD loss ``sum_t -log p_poe(y_t) + lambda * sum_t -log q_main(y_t)``.

    ``source``: the main model's (N, V) logits or its :class:`Projection`.
    ``degenerative``: the frozen model's (N, V) logits (or log-probabilities), its
    :class:`Projection` (its logits then made a chunk of rows at a time), or a
    :class:`FrozenLogits` of either; never
    differentiated; may be None when ``beta`` is 0. ``target``: N targets.
    With ``epsilon`` > 0 the product's term is label smoothed as fairseq's
    ``label_smoothed_nll_loss`` does (``eps_i = eps / (V - 1)``). ``eos_index`` is needed
    for EOS outside the product and for the ``main_eos_nll`` diagnostic.

    Returns ``loss`` (the only sum with a gradient), ``poe_nll``, ``main_nll`` (what
    generation uses), ``main_eos_nll`` (at gold-EOS positions), and, computed without
    gradient only (validation), ``degen_nll``.
    """
    frozen = degenerative
    if degenerative is not None and not isinstance(degenerative, FrozenLogits):
        frozen = FrozenLogits(degenerative)
    objective = LfdObjective(
        target, frozen, beta, mle_weight, epsilon, ignore_index, eos_index, eos_in_product, accuracy
    )
    out = chunked_loss(source, objective, rows)
    if frozen is None or requires_grad(source):
        del out["degen_nll"]
    return out
