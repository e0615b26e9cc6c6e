"""lfd_poe's loss against an independent computation of docs/algorithms.md (LFD).

Reference (float64, explicit softmaxes): p_poe(v) proportional to
q_main(v) * q_degen(v) ** beta; L = sum_t -log p_poe(y_t) + lambda * sum_t -log q_main(y_t);
d L / d z_main = (p_poe - onehot) + lambda * (q_main - onehot).

With the end-of-sentence symbol kept out of the product (the default,
``eos_in_product=False``):
p(eos) = q_main(eos) and p(v) = (1 - q_main(eos)) * q_main(v) q_degen(v)^beta /
sum_{u != eos} q_main(u) q_degen(u)^beta for every other v.
"""

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from fairseq_divgen.losses import FrozenLogits, Projection, chunking, lfd_loss
from fairseq_divgen.losses.finite import FiniteWatch

# every test also runs on NaN-filled new memory (conftest.memory_fill)
pytestmark = pytest.mark.usefixtures("memory_fill")


def _lfd(z, degen, target, beta, lam, eps, pad, eos=None, eos_in_product=True, rows=None):
    """``lfd_loss`` (the paper's product unless ``eos_in_product`` is False), sums as attributes
    (``degen_nll`` None when not computed)."""
    out = lfd_loss(
        z, degen, target, beta, lam, eps, pad, eos, eos_in_product=eos_in_product, rows=rows
    )
    return SimpleNamespace(**{"degen_nll": None, **out})


PAD = 1
EOS = 2
V = 17


def _batch(seed=0, n=30):
    g = torch.Generator().manual_seed(seed)
    z_main = torch.randn(n, V, generator=g, dtype=torch.float64) * 2
    z_degen = torch.randn(n, V, generator=g, dtype=torch.float64) * 3
    target = torch.randint(2, V, (n,), generator=g)
    target[::6] = PAD
    target[1::5] = EOS
    return z_main, torch.log_softmax(z_degen, -1), target


@pytest.fixture(params=["whole", "chunks and blocks"])
def split(request, monkeypatch):
    """The 30 rows at once, or in chunks of 7 rows (the degenerative model's
    projection) each taken in blocks of 3 (the CPU's cache-sized elementwise math):
    both splits end unevenly."""
    if request.param != "whole":
        monkeypatch.setattr(chunking, "CHUNK_ELEMENTS", 7 * V)
        monkeypatch.setattr(chunking, "CPU_BLOCK_ELEMENTS", 3 * V)
    return request.param


def _softmax(z):
    return torch.exp(z) / torch.exp(z).sum(-1, keepdim=True)


def _reference(z_main, degen_lp, target, beta, lam):
    q_main = _softmax(z_main)
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


def _eos_outside_distribution(z_main, degen_lp, beta):
    """The product over the non-EOS symbols, EOS from the main model alone (float64)."""
    q_main = _softmax(z_main)
    unnorm = q_main * torch.exp(degen_lp) ** beta
    unnorm[:, EOS] = 0.0
    p = (1 - q_main[:, EOS : EOS + 1]) * unnorm / unnorm.sum(-1, keepdim=True)
    p[:, EOS] = q_main[:, EOS]
    return p


@pytest.mark.parametrize("beta,lam", [(1.0, 0.0), (0.5, 0.5), (2.0, 1.0), (0.0, 0.3)])
def test_loss_and_gradient_match_reference(beta, lam, split):
    z_main, degen_lp, target = _batch(seed=int(beta * 10 + lam * 100))
    ref_loss, ref_poe, ref_main, ref_grad = _reference(z_main, degen_lp, target, beta, lam)
    z = z_main.clone().requires_grad_(True)
    d = degen_lp.clone().requires_grad_(True)
    out = _lfd(z, d, target, beta, lam, 0.0, PAD)
    out.loss.backward()
    # The loss reduces in fp32 (as it would for fp16 logits), hence the tolerances.
    assert out.loss.item() == pytest.approx(ref_loss, rel=1e-5)
    assert out.poe_nll.item() == pytest.approx(ref_poe, rel=1e-5)
    assert out.main_nll.item() == pytest.approx(ref_main, rel=1e-5)
    assert (z.grad - ref_grad).abs().max().item() < 1e-5
    assert d.grad is None  # no gradient ever reaches the degenerative model


def test_degenerative_logits_and_log_probs_give_the_same_loss():
    z_main, degen_lp, target = _batch(seed=3)
    shifted = degen_lp + torch.randn(len(target), 1, dtype=torch.float64) * 5  # any per-token shift
    a = _lfd(z_main, degen_lp, target, 0.8, 0.5, 0.1, PAD, EOS)
    b = _lfd(z_main, shifted, target, 0.8, 0.5, 0.1, PAD, EOS)
    assert a.loss.item() == pytest.approx(b.loss.item(), rel=1e-6)
    assert a.degen_nll.item() == pytest.approx(b.degen_nll.item(), rel=1e-6)


def test_logged_nlls_match_reference():
    z_main, degen_lp, target = _batch(seed=4)
    out = _lfd(z_main, degen_lp, target, 1.0, 1.0, 0.0, PAD, EOS)
    keep = target != PAD
    gold_degen = degen_lp[keep].gather(-1, target[keep, None])
    assert out.degen_nll.item() == pytest.approx(-gold_degen.sum().item(), rel=1e-6)
    at_eos = target == EOS
    assert at_eos.sum() >= 3
    ref_eos = -torch.log(_softmax(z_main)[at_eos, EOS]).sum().item()
    assert out.main_eos_nll.item() == pytest.approx(ref_eos, rel=1e-6)


def test_beta_zero_lambda_zero_is_cross_entropy():
    z_main, degen_lp, target = _batch(seed=7)
    z32 = z_main.float()
    out = _lfd(z32, degen_lp.float(), target, 0.0, 0.0, 0.0, PAD, EOS, eos_in_product=True)
    ce = F.cross_entropy(z32, target, ignore_index=PAD, reduction="sum")
    assert out.loss.item() == pytest.approx(ce.item(), rel=1e-6)
    assert out.main_nll.item() == pytest.approx(ce.item(), rel=1e-6)


def test_beta_zero_needs_no_degenerative_model():
    z_main, _, target = _batch(seed=7)
    for eos_in_product in (True, False):
        out = _lfd(z_main, None, target, 0.0, 0.5, 0.0, PAD, EOS, eos_in_product=eos_in_product)
        ce = F.cross_entropy(z_main, target, ignore_index=PAD, reduction="sum")
        assert out.loss.item() == pytest.approx(1.5 * ce.item(), rel=1e-6)
        assert out.degen_nll is None


def test_label_smoothing_follows_fairseq_convention_on_the_poe_distribution():
    z_main, degen_lp, target = _batch(seed=8)
    eps, beta = 0.1, 0.7
    out = _lfd(z_main, degen_lp, target, beta, 0.0, eps, PAD)
    lp = torch.log_softmax(z_main + beta * degen_lp, -1)
    keep = target != PAD
    nll = -lp[keep].gather(-1, target[keep, None]).sum()
    smooth = -lp[keep].sum()
    eps_i = eps / (V - 1)  # fairseq's label_smoothed_nll_loss convention
    assert out.loss.item() == pytest.approx(
        ((1 - eps - eps_i) * nll + eps_i * smooth).item(), rel=1e-6
    )


@pytest.mark.parametrize("beta,lam,eps", [(1.0, 0.0, 0.0), (1.0, 1.0, 0.1), (2.0, 0.5, 0.0)])
def test_eos_outside_the_product_matches_reference(beta, lam, eps, split):
    z_main, degen_lp, target = _batch(seed=11 + int(10 * beta))
    p = _eos_outside_distribution(z_main, degen_lp, beta)
    assert torch.allclose(p.sum(-1), torch.ones(len(p), dtype=p.dtype))
    keep = target != PAD
    lp = torch.log(p[keep])
    nll = -lp.gather(-1, target[keep, None]).sum()
    smooth = -lp.sum()
    main_nll = -torch.log(_softmax(z_main)[keep]).gather(-1, target[keep, None]).sum()
    eps_i = eps / (V - 1)
    ref_loss = (1 - eps - eps_i) * nll + eps_i * smooth if eps else nll
    ref_loss = ref_loss + lam * main_nll
    z_ref = z_main.clone().requires_grad_(True)
    # gradient of the reference: autograd through the explicit float64 formula
    p_ref = _eos_outside_distribution(z_ref, degen_lp, beta)[keep]
    lp_ref = torch.log(p_ref)
    r = -lp_ref.gather(-1, target[keep, None]).sum()
    if eps:
        r = (1 - eps - eps_i) * r + eps_i * -lp_ref.sum()
    r = r + lam * -torch.log_softmax(z_ref, -1)[keep].gather(-1, target[keep, None]).sum()
    r.backward()

    z = z_main.clone().requires_grad_(True)
    out = _lfd(z, degen_lp, target, beta, lam, eps, PAD, EOS, eos_in_product=False)
    out.loss.backward()
    assert out.loss.item() == pytest.approx(ref_loss.item(), rel=1e-5)
    assert out.poe_nll.item() == pytest.approx(nll.item(), rel=1e-5)
    assert (z.grad - z_ref.grad).abs().max().item() < 1e-5


def test_eos_outside_the_product_gives_eos_the_main_models_gradient():
    # d/dz_eos of -log p(y) is q_main(eos) - [y = eos], whatever the degenerative model says.
    z_main, degen_lp, target = _batch(seed=12)
    degen_lp = degen_lp.clone()
    degen_lp[:, EOS] = 0.0  # a degenerative model certain of EOS everywhere
    z = z_main.clone().requires_grad_(True)
    _lfd(z, degen_lp, target, 1.0, 0.0, 0.0, PAD, EOS, eos_in_product=False).loss.backward()
    keep = target != PAD
    expected = _softmax(z_main)[:, EOS] - (target == EOS).double()
    assert torch.allclose(z.grad[keep, EOS], expected[keep], atol=1e-6)
    # Under the paper's product the same degenerative model pushes EOS down hard.
    z2 = z_main.clone().requires_grad_(True)
    _lfd(z2, degen_lp, target, 1.0, 0.0, 0.0, PAD, EOS).loss.backward()
    assert (z2.grad[keep, EOS] > expected[keep] + 1e-3).any()


def test_eos_outside_the_product_is_stable_when_the_main_model_is_sure_of_eos():
    z_main, degen_lp, target = _batch(seed=13)
    z_main = z_main.float()
    z_main[:, EOS] = 60.0  # q_main(eos) == 1 in fp32
    z = z_main.clone().requires_grad_(True)
    out = _lfd(z, degen_lp.float(), target, 1.0, 1.0, 0.1, PAD, EOS, eos_in_product=False)
    out.loss.backward()
    assert torch.isfinite(out.loss) and torch.isfinite(z.grad).all()


def test_fp16_logits_give_finite_loss():
    z_main, degen_lp, target = _batch(seed=9)
    for eos_in_product in (True, False):
        z = (z_main * 20).half().requires_grad_(True)
        out = _lfd(
            z, degen_lp.half(), target, 1.0, 0.5, 0.1, PAD, EOS, eos_in_product=eos_in_product
        )
        out.loss.backward()
        assert torch.isfinite(out.loss) and torch.isfinite(z.grad).all()


def _saved_vocab_sized(fn):
    """How many distinct (N, V) tensors autograd keeps for the backward of ``fn()``."""
    storages = set()

    def pack(t):
        if t.numel() == 30 * V:
            storages.add(t.untyped_storage().data_ptr())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return len(storages)


@pytest.mark.parametrize("eos_in_product", [True, False])
@pytest.mark.parametrize("lam", [0.0, 1.0])
def test_backward_keeps_one_vocabulary_sized_tensor(lam, eos_in_product):
    # No log-softmax of either model and no product distribution for backward: the
    # gradient w.r.t. the main logits alone, whatever lambda (with lambda 0 nothing
    # of the main model's own NLL is kept either).
    z_main, degen_lp, target = _batch(seed=14)
    z = z_main.float().requires_grad_(True)
    d = degen_lp.float()
    kept = _saved_vocab_sized(
        lambda: _lfd(z, d, target, 1.0, lam, 0.1, PAD, EOS, eos_in_product=eos_in_product)
    )
    assert kept == 1
    out = _lfd(z, d, target, 1.0, lam, 0.0, PAD, EOS, eos_in_product=eos_in_product)
    ce = F.cross_entropy(z, target, ignore_index=PAD, reduction="sum")
    assert out.main_nll.item() == pytest.approx(ce.item(), rel=1e-6)  # still logged exactly


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("as_projection", [False, True], ids=["logits", "projection"])
def test_the_degenerative_logits_finiteness_flag_sees_nan_and_both_infinities(bad, as_projection):
    # Every chunk the loss makes of the frozen model's logits feeds FrozenLogits.finite:
    # a single NaN, +inf or -inf in one row of the last chunk turns it False.
    z_main, degen_lp, target = _batch(seed=11)
    if as_projection:
        g = torch.Generator().manual_seed(3)
        h = torch.randn(30, 8, generator=g)
        weight = torch.randn(V, 8, generator=g)
        bias = torch.zeros(V)
        if bad != bad:  # NaN
            h[-1, 0] = bad
        else:  # the matmul overflows: a huge feature times a weight of 10, of bad's sign
            h[-1] = 0.0
            h[-1, 0] = 1e38 if bad > 0 else -1e38
            weight[:, 0] = 10.0
        frozen = FrozenLogits(Projection(h, weight, bias))
        clean = FrozenLogits(Projection(torch.randn(30, 8, generator=g), weight, bias))
    else:
        bad_lp = degen_lp.clone()
        bad_lp[-1, 4] = bad
        frozen, clean = FrozenLogits(bad_lp), FrozenLogits(degen_lp)
    for degenerative, finite in ((frozen, False), (clean, True)):
        _lfd(z_main.clone(), degenerative, target, 1.0, 0.5, 0.1, PAD, EOS, rows=7)
        assert bool(degenerative.finite) is finite


def test_the_finiteness_watch_keeps_an_unread_failure_of_an_earlier_micro_batch():
    # Several micro-batches record before anyone reads: a failure of the first is kept.
    watch = FiniteWatch()
    watch.record(torch.tensor(False), torch.float16)
    watch.record(torch.tensor(True), torch.float16)
    assert watch.failed() == torch.float16
    assert watch.failed() is None  # reported once
    watch.record(torch.tensor(True), torch.float32)
    assert watch.failed() is None
