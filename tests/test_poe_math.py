"""lfd_poe's loss against an independent computation of ALGORITHMS.md section 3.

Reference (float64, explicit softmaxes): p_poe(v) proportional to
q_main(v) * q_degen(v) ** beta; L = sum_t -log p_poe(y_t) + lambda * sum_t -log q_main(y_t);
d L / d z_main = (p_poe - onehot) + lambda * (q_main - onehot).
"""
import pytest
import torch
import torch.nn.functional as F

from fairseq_divgen.losses import poe_nll_loss

PAD = 1
V = 17


def _batch(seed=0, n=30):
    g = torch.Generator().manual_seed(seed)
    z_main = torch.randn(n, V, generator=g, dtype=torch.float64) * 2
    z_degen = torch.randn(n, V, generator=g, dtype=torch.float64) * 3
    target = torch.randint(2, V, (n,), generator=g)
    target[::6] = PAD
    return z_main, torch.log_softmax(z_degen, -1), target


def _reference(z_main, degen_lp, target, beta, lam):
    q_main = torch.exp(z_main) / torch.exp(z_main).sum(-1, keepdim=True)
    q_degen = torch.exp(degen_lp)
    unnorm = q_main * q_degen**beta
    p_poe = unnorm / unnorm.sum(-1, keepdim=True)
    loss, poe_sum, main_sum = 0.0, 0.0, 0.0
    grad = torch.zeros_like(z_main)
    for t in range(len(target)):
        if target[t] == PAD:
            continue
        y = target[t]
        poe_sum += -torch.log(p_poe[t, y]).item()
        main_sum += -torch.log(q_main[t, y]).item()
        onehot = F.one_hot(y, V).to(z_main.dtype)
        grad[t] = (p_poe[t] - onehot) + lam * (q_main[t] - onehot)
    loss = poe_sum + lam * main_sum
    return loss, poe_sum, main_sum, grad


@pytest.mark.parametrize("beta,lam", [(1.0, 0.0), (0.5, 0.5), (2.0, 1.0), (0.0, 0.3)])
def test_loss_and_gradient_match_reference(beta, lam):
    z_main, degen_lp, target = _batch(seed=int(beta * 10 + lam * 100))
    ref_loss, ref_poe, ref_main, ref_grad = _reference(z_main, degen_lp, target, beta, lam)
    z = z_main.clone().requires_grad_(True)
    d = degen_lp.clone().requires_grad_(True)
    loss, poe, main = poe_nll_loss(z, d, target, beta, lam, 0.0, PAD)
    loss.backward()
    # The loss reduces in fp32 (as it would for fp16 logits), hence the tolerances.
    assert loss.item() == pytest.approx(ref_loss, rel=1e-5)
    assert poe.item() == pytest.approx(ref_poe, rel=1e-5)
    assert main.item() == pytest.approx(ref_main, rel=1e-5)
    assert (z.grad - ref_grad).abs().max().item() < 1e-5
    assert d.grad is None  # no gradient ever reaches the degenerative model


def test_beta_zero_lambda_zero_is_exactly_cross_entropy():
    z_main, degen_lp, target = _batch(seed=7)
    z32 = z_main.float()
    loss, poe, main = poe_nll_loss(z32, degen_lp.float(), target, 0.0, 0.0, 0.0, PAD)
    ce = F.cross_entropy(z32, target, ignore_index=PAD, reduction="sum")
    assert loss.item() == ce.item()
    assert main.item() == ce.item()


def test_label_smoothing_follows_fairseq_convention_on_the_poe_distribution():
    z_main, degen_lp, target = _batch(seed=8)
    eps, beta = 0.1, 0.7
    loss, _, _ = poe_nll_loss(z_main, degen_lp, target, beta, 0.0, eps, PAD)
    lp = torch.log_softmax(z_main + beta * degen_lp, -1)
    keep = target != PAD
    nll = -lp[keep].gather(-1, target[keep, None]).sum()
    smooth = -lp[keep].sum()
    eps_i = eps / (V - 1)  # fairseq's label_smoothed_nll_loss convention
    assert loss.item() == pytest.approx(((1 - eps - eps_i) * nll + eps_i * smooth).item(), rel=1e-6)


def test_fp16_logits_give_finite_loss():
    z_main, degen_lp, target = _batch(seed=9)
    z = (z_main * 20).half().requires_grad_(True)
    loss, _, _ = poe_nll_loss(z, degen_lp.half(), target, 1.0, 0.5, 0.1, PAD)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(z.grad).all()
