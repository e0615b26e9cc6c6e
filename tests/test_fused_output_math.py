"""The fused output path against autograd through an explicit float64 reference.

Reference: logits ``z = h W^T + b`` as one (N, V) tensor, then each objective written
out here from its definition (docs/algorithms.md and the papers) and
differentiated by autograd. The fused path (a :class:`Projection` source) computes the
same sums chunk by chunk
(4 rows per chunk: 30 rows split 4 + ... + 4 + 2; loss truncation 2 sequences of 6)
with closed-form gradients. Loss, logged sums and the gradients with respect to
``h``, ``W`` and ``b`` agree to 1e-10, with pads, with and without bias, and with the
output weight tied to an input embedding (``h`` computed from ``W``, so ``W`` gets
the sum of both gradients).
"""

import math

import pytest
import torch

from fairseq_divgen.losses import (
    Projection,
    chunked,
    chunked_loss,
    chunking,
    error_norm_truncated_loss,
    lfd_loss,
    loss_truncation_loss,
    mixce_loss,
    tailr_loss,
    truncated_nll_loss,
    unlikelihood_loss,
)

# every test also runs on NaN-filled new memory (conftest.memory_fill)
pytestmark = pytest.mark.usefixtures("memory_fill")

PAD, EOS = 1, 2
B, T, V, D = 5, 6, 11, 4
ROWS = 4  # rows per chunk: splits the 30 rows unevenly
TOL = dict(rtol=1e-10, atol=1e-10)


class Case:
    """Leaves of one float64 problem: W (V, d), b, and h (free, or tied: tanh(W[x] A))."""

    def __init__(self, seed=0, bias=True, tied=False):
        g = torch.Generator().manual_seed(seed)
        self.W = torch.randn(V, D, generator=g, dtype=torch.float64) * 1.5
        self.b = torch.randn(V, generator=g, dtype=torch.float64) if bias else None
        self.h0 = torch.randn(B * T, D, generator=g, dtype=torch.float64)
        self.A = torch.randn(D, D, generator=g, dtype=torch.float64) * 1.5
        self.inputs = torch.randint(0, V, (B * T,), generator=g)
        self.tied = tied
        target = torch.randint(2, 8, (B, T), generator=g)  # few symbols: repeats
        target[1, 4:] = PAD
        target[3, 2:] = PAD
        target[0, 5] = target[2, 5] = EOS
        self.target = target

    def leaves(self):
        """Fresh copies of the leaves, requiring grad."""
        out = {"W": self.W, "h0": self.h0, "A": self.A}
        if self.b is not None:
            out["b"] = self.b
        return {k: v.clone().requires_grad_(True) for k, v in out.items()}

    def features(self, leaves):
        if self.tied:
            return torch.tanh(leaves["W"][self.inputs] @ leaves["A"])
        return leaves["h0"]

    def compare(self, ours, reference, keys=()):
        """Run ``ours(h, W, b) -> (loss, stats)`` and ``reference(z) -> (loss, stats)``;
        assert the losses, the ``keys`` of both stats and every leaf's gradient agree."""
        mine = self.leaves()
        loss, stats = ours(self.features(mine), mine["W"], mine.get("b"))
        loss.backward()
        ref = self.leaves()
        z = self.features(ref) @ ref["W"].t()
        if self.b is not None:
            z = z + ref["b"]
        ref_loss, ref_stats = reference(z)
        ref_loss.backward()
        torch.testing.assert_close(loss, ref_loss, **TOL)
        for k in keys:
            torch.testing.assert_close(
                torch.as_tensor(stats[k]).double(), torch.as_tensor(ref_stats[k]).double(), **TOL
            )
        for name in mine:
            if ref[name].grad is None:
                assert mine[name].grad is None or not mine[name].grad.any(), name
                continue
            assert ref[name].grad.abs().sum() > 0, name  # the reference reaches it
            torch.testing.assert_close(mine[name].grad, ref[name].grad, **TOL)
        return stats, ref_stats


CASES = [
    dict(bias=True, tied=False),
    dict(bias=False, tied=False),
    dict(bias=True, tied=True),
    dict(bias=False, tied=True),
]
IDS = ["bias", "no-bias", "tied-bias", "tied"]


def _flat(case):
    t = case.target.reshape(-1)
    return t, t != PAD


def _gold_lprobs(z, t):
    lp = torch.log_softmax(z, -1)
    return lp, lp.gather(-1, t.clamp(min=0)[:, None]).squeeze(-1)


# -- the chunked Function itself ------------------------------------------------------


class Linear:
    """An objective whose loss is linear in the logits: sum(C * z); dL/dz = C."""

    all_names = ("loss", "total")

    def __init__(self, coef):
        self.coef = coef

    def __call__(self, z, rows, want_grad, out=None):
        c = self.coef[rows]
        return torch.stack([(c * z).sum(), z.sum()]), (c.clone() if want_grad else None)


class Spy:
    """An objective that records what it is called with; its loss is sum(z), dL/dz = 1."""

    all_names = ("loss",)

    def __init__(self):
        self.seen, self.want_grad = [], []

    def __call__(self, z, rows, want_grad, out=None):
        self.seen.append(z)
        self.want_grad.append(want_grad)
        return torch.stack([z.sum()]), (torch.ones_like(z) if want_grad else None)


@pytest.mark.parametrize("kw", CASES, ids=IDS)
def test_chunked_function_gradients_equal_autograd(kw):
    case = Case(1, **kw)
    coef = torch.randn(B * T, V, dtype=torch.float64)

    def ours(h, w, b):
        out = chunked_loss(Projection(h, w, b), Linear(coef), rows=ROWS)
        return out["loss"], out

    stats, ref = case.compare(ours, lambda z: ((coef * z).sum(), {"total": z.sum()}), ["total"])
    assert not stats["total"].requires_grad


def test_under_no_grad_only_the_sums_are_computed():
    case = Case(2)
    spy = Spy()
    mine = case.leaves()
    with torch.no_grad():
        out = chunked_loss(Projection(mine["h0"], mine["W"], mine["b"]), spy, rows=ROWS)
    ref = (mine["h0"] @ mine["W"].t() + mine["b"]).sum()
    torch.testing.assert_close(out["loss"], ref.detach(), **TOL)
    assert spy.want_grad == [False] * math.ceil(B * T / ROWS) and not out["loss"].requires_grad


class SomeRowsWithoutGradient:
    """loss = sum(z) over the rows of every other chunk; the others give no gradient."""

    all_names = ("loss",)

    def __call__(self, z, rows, want_grad, out=None):
        if (rows.start // ROWS) % 2 == 0:
            return torch.stack([z.sum()]), (torch.ones_like(z) if want_grad else None)
        return torch.zeros(1, dtype=z.dtype), None


@pytest.mark.parametrize("source", ["projection", "logits"])
def test_rows_an_objective_gives_no_gradient_get_exactly_zero(source, memory_fill):
    g = torch.Generator().manual_seed(6)
    h = torch.randn(B * T, D, generator=g, dtype=torch.float64).requires_grad_(True)
    w = torch.randn(V, D, generator=g, dtype=torch.float64)
    if source == "projection":
        out = chunked_loss(Projection(h, w, None), SomeRowsWithoutGradient(), rows=ROWS)
    else:
        out = chunked_loss(h @ w.t(), SomeRowsWithoutGradient(), rows=ROWS)
    out["loss"].backward()
    with_grad = torch.tensor([(i // ROWS) % 2 == 0 for i in range(B * T)])
    torch.testing.assert_close(h.grad[with_grad], w.sum(0).expand(int(with_grad.sum()), D))
    assert torch.equal(h.grad[~with_grad], torch.zeros_like(h.grad[~with_grad]))


def test_second_backward_raises():
    case = Case(3)
    mine = case.leaves()
    coef = torch.ones(B * T, V, dtype=torch.float64)
    out = chunked_loss(Projection(mine["h0"], mine["W"], None), Linear(coef), rows=ROWS)
    out["loss"].backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="one backward only"):
        out["loss"].backward()


def test_half_inputs_keep_tiny_gradients_until_the_loss_scale():
    # dL/dz of 1e-9 is below fp16's smallest subnormal (6e-8): an fp16 matmul of it would
    # give 0. The fused path scales dL/dz by a power of two before its half-precision
    # matmuls, keeps the results in fp32, and casts them to the parameters' half dtype
    # only after fairseq's loss scale (2^20 here).
    g = torch.Generator().manual_seed(4)
    h = torch.randn(B * T, D, generator=g).half().requires_grad_(True)
    w = torch.randn(V, D, generator=g).half().requires_grad_(True)
    coef = torch.full((B * T, V), 1e-9)
    out = chunked_loss(Projection(h, w, None), Linear(coef), rows=ROWS)
    assert out["loss"].dtype == torch.float32
    (out["loss"] * 2.0**20).backward()
    assert h.grad.dtype == w.grad.dtype == torch.float16
    ref_h = (coef @ w.float()) * 2.0**20
    ref_w = (coef.t() @ h.float()) * 2.0**20
    torch.testing.assert_close(h.grad.float(), ref_h, rtol=2e-3, atol=0)
    torch.testing.assert_close(w.grad.float(), ref_w, rtol=2e-3, atol=0)
    assert torch.mm(coef.half(), w.detach()).abs().max() == 0  # what half precision would give


def test_under_autocast_the_logits_take_the_autocast_dtype():
    # fairseq's --amp runs the unfused output layer under autocast (half-precision logits);
    # the fused path projects in the same dtype, and its gradients stay in the leaves' fp32.
    g = torch.Generator().manual_seed(5)
    h = torch.randn(B * T, D, generator=g).requires_grad_(True)
    w = torch.randn(V, D, generator=g).requires_grad_(True)
    spy = Spy()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = chunked_loss(Projection(h, w, None), spy, rows=ROWS)
        ref = torch.nn.functional.linear(h, w)
    assert ref.dtype == torch.bfloat16 and spy.seen[0].dtype == torch.float32
    torch.testing.assert_close(torch.cat(spy.seen), ref.float(), rtol=0, atol=0)
    out["loss"].backward()
    assert h.grad.dtype == w.grad.dtype == torch.float32


# -- each criterion's closed form ----------------------------------------------------


@pytest.mark.parametrize("kw", CASES, ids=IDS)
@pytest.mark.parametrize(
    "gamma,min_weight,eps", [(0.1, 0.3, 0.1), (1.0, 0.0, 0.0), (0.0, 0.0, 0.1)]
)
def test_tailr(kw, gamma, min_weight, eps):
    case = Case(5, **kw)
    t, real = _flat(case)

    def reference(z):
        lp, gold = _gold_lprobs(z, t)
        p = gold.detach().exp()
        w = (p / (gamma + (1 - gamma) * p)).clamp(min_weight, 1.0) * real
        loss = (1 - eps) * (w * -gold).sum() + eps / V * (-lp.sum(-1) * real).sum()
        return loss, {
            "nll": (-gold * real).sum(),
            "weight": w.sum(),
            "n_correct": _correct(z, t, real),
        }

    def ours(h, w, b):
        out = tailr_loss(Projection(h, w, b), t, gamma, min_weight, eps, PAD, True, ROWS)
        return out["loss"], out

    case.compare(ours, reference, ["nll", "weight", "n_correct"])


def _correct(z, t, real):
    return ((z.argmax(-1) == t) & real).sum()


@pytest.mark.parametrize("kw", CASES[:3], ids=IDS[:3])
@pytest.mark.parametrize("eta", [0.0, 0.5, 1.0])
def test_mixce(kw, eta):
    case = Case(6, **kw)
    t, real = _flat(case)

    def reference(z):
        _, gold = _gold_lprobs(z, t)
        w = (eta + (1 - eta) * gold.detach().exp()) * real
        return (w * -gold).sum(), {"nll": (-gold * real).sum(), "weight": w.sum()}

    def ours(h, w, b):
        out = mixce_loss(Projection(h, w, b), t, eta, PAD, rows=ROWS)
        return out["loss"], out

    case.compare(ours, reference, ["nll", "weight"])


def _ls(z, t, keep, eps):
    """fairseq's label-smoothed NLL summed over the rows ``keep``."""
    lp, gold = _gold_lprobs(z, t)
    eps_i = eps / (V - 1)
    return ((1 - eps - eps_i) * -gold + eps_i * -lp.sum(-1))[keep].sum()


@pytest.mark.parametrize("kw", CASES[:3], ids=IDS[:3])
@pytest.mark.parametrize("eps,truncate", [(0.1, True), (0.0, True), (0.1, False)])
def test_error_norm_truncation(kw, eps, truncate):
    case = Case(7, **kw)
    t, real = _flat(case)
    with torch.no_grad():  # a threshold between the norms of this batch
        z0 = case.features(case.leaves()) @ case.W.t() + (0 if case.b is None else case.b)
        onehot = torch.nn.functional.one_hot(t, V).double()
        norms0 = (torch.softmax(z0, -1) - onehot).norm(dim=-1)[real]
        threshold = norms0.median().item() + 1e-6
    assert (norms0 - threshold).abs().min() > 1e-9

    def reference(z):
        q = torch.softmax(z, -1).detach()
        norms = (q - onehot).norm(dim=-1) * real
        keep = real & (norms <= threshold)
        _, gold = _gold_lprobs(z, t)
        loss = _ls(z, t, keep if truncate else real, eps)
        return loss, {"nll": (-gold * real).sum(), "kept": keep.sum(), "norm": norms.sum()}

    def ours(h, w, b):
        out = error_norm_truncated_loss(
            Projection(h, w, b), t, threshold, eps, PAD, truncate, rows=ROWS
        )
        return out["loss"], out

    stats, _ = case.compare(ours, reference, ["nll", "kept", "norm"])
    assert 0 < stats["kept"] < real.sum()


def _candidates(row, pos):
    seen = []
    for s in range(pos):
        c = int(row[s])
        if c != PAD and c != int(row[pos]) and c not in seen:
            seen.append(c)
    return seen


@pytest.mark.parametrize("kw", CASES, ids=IDS)
@pytest.mark.parametrize("alpha", [1.0, 0.0])
def test_unlikelihood(kw, alpha):
    case = Case(8, **kw)
    case.W = case.W * 2.5  # confident rows: some candidates hit the 1 - q >= 1e-5 clamp
    t, real = _flat(case)

    def reference(z):
        lp, gold = _gold_lprobs(z, t)
        lp = lp.view(B, T, V)
        penalty, count = z.new_zeros(()), 0
        for b in range(B):
            for pos in range(T):
                if case.target[b, pos] == PAD:
                    continue
                for c in _candidates(case.target[b], pos):
                    one_minus = -torch.expm1(lp[b, pos, c].clamp(max=math.log1p(-1e-5)))
                    penalty = penalty - torch.log(one_minus)
                    count += 1
        nll = (-gold * real).sum()
        return nll + alpha * penalty, {"nll": nll, "penalty": penalty, "candidates": count}

    def ours(h, w, b):
        out = unlikelihood_loss(Projection(h, w, b), case.target, alpha, PAD, rows=ROWS)
        return out["loss"], out

    stats, ref = case.compare(
        ours, reference, ["nll"] + (["penalty", "candidates"] if alpha else [])
    )
    if alpha and kw == CASES[0]:
        assert ref["candidates"] > 10


@pytest.mark.parametrize("kw", CASES[:3], ids=IDS[:3])
@pytest.mark.parametrize("eps,truncate", [(0.1, True), (0.0, True), (0.1, False)])
def test_loss_truncation(kw, eps, truncate):
    case = Case(9, **kw)
    t, real = _flat(case)
    with torch.no_grad():
        z0 = case.features(case.leaves()) @ case.W.t() + (0 if case.b is None else case.b)
        nll0 = (-_gold_lprobs(z0, t)[1] * real).view(B, T)
        cutoff = (nll0.sum(1) / real.view(B, T).sum(1)).median().item() + 1e-6

    def reference(z):
        _, gold = _gold_lprobs(z, t)
        nll = (-gold * real).view(B, T)
        tokens = real.view(B, T).sum(1)
        seq = nll.detach().sum(1) / tokens
        keep_seq = seq <= cutoff
        keep = keep_seq[:, None].expand(B, T).reshape(-1) & real
        loss = _ls(z, t, keep if truncate else real, eps)
        return loss, {
            "nll": nll.sum(),
            "sequence_nll": seq,
            "kept_sequences": keep_seq.sum(),
            "kept_tokens": tokens[keep_seq].sum(),
        }

    def ours(h, w, b):
        cut = torch.tensor(cutoff, dtype=torch.float64)
        out = loss_truncation_loss(
            Projection(h, w, b), case.target, cut, eps, PAD, truncate, rows=2 * T
        )
        return out["loss"], out

    stats, _ = case.compare(
        ours, reference, ["nll", "sequence_nll", "kept_sequences", "kept_tokens"]
    )
    assert 0 < stats["kept_sequences"] < B


@pytest.mark.parametrize("kw", CASES, ids=IDS)
@pytest.mark.parametrize(
    "ratio,count", [(0.3, "host"), (0.3, "device"), (0.55, "device"), (1.0, "host")]
)
def test_truncated_ce(kw, ratio, count):
    case = Case(10, **kw)
    t, real = _flat(case)
    n = int(real.sum())

    def reference(z):
        _, gold = _gold_lprobs(z, t)
        nll = -gold[real]
        k = math.ceil(ratio * n - 1e-12)
        kept = torch.sort(nll.detach()).indices[:k]
        return nll[kept].sum(), {"nll": nll.sum(), "kept": k, "n_correct": _correct(z, t, real)}

    def ours(h, w, b):
        host = n if count == "host" else None
        out = truncated_nll_loss(
            Projection(h, w, b),
            t,
            ratio,
            PAD,
            num_tokens=host,
            max_tokens=B * T - 2,
            accuracy=True,
            rows=ROWS,
        )
        return out["loss"], out

    case.compare(ours, reference, ["nll", "kept", "n_correct"])


def test_truncated_ce_gradient_pass_runs_over_the_kept_rows_only(monkeypatch):
    case = Case(11)
    t, real = _flat(case)
    projected = []
    logits = chunked.OutputLayer.logits

    def counting(layer, rows):
        z = logits(layer, rows)
        projected.append(len(z))
        return z

    monkeypatch.setattr(chunked.OutputLayer, "logits", counting)
    mine = case.leaves()
    out = truncated_nll_loss(
        Projection(mine["h0"], mine["W"], mine["b"]),
        t,
        0.3,
        PAD,
        num_tokens=int(real.sum()),
        rows=B * T,
    )
    kept = out["kept"]
    assert projected == [B * T, kept] and kept == math.ceil(0.3 * int(real.sum()))


def _poe_reference(z, zd, t, real, beta, lam, eps, eos_in_product):
    q = torch.softmax(z, -1)
    unnorm = q * torch.softmax(zd, -1) ** beta
    if not eos_in_product:
        unnorm = unnorm.clone()
        unnorm[:, EOS] = 0.0
        p = (1 - q[:, EOS : EOS + 1]) * unnorm / unnorm.sum(-1, keepdim=True)
        p = torch.cat([p[:, :EOS], q[:, EOS : EOS + 1], p[:, EOS + 1 :]], dim=1)
    else:
        p = unnorm / unnorm.sum(-1, keepdim=True)
    lp = torch.log(p)
    eps_i = eps / (V - 1)
    poe = -lp.gather(-1, t[:, None]).squeeze(-1)
    main = -torch.log(q.gather(-1, t[:, None])).squeeze(-1)
    loss = ((1 - eps - eps_i) * poe + eps_i * -lp.sum(-1) + lam * main)[real].sum()
    eos_nll = main[t == EOS].sum()
    return loss, {"poe_nll": poe[real].sum(), "main_nll": main[real].sum(), "main_eos_nll": eos_nll}


@pytest.mark.parametrize("kw", CASES, ids=IDS)
@pytest.mark.parametrize(
    "beta,lam,eps,eos_in_product",
    [(0.7, 0.5, 0.1, True), (1.0, 0.0, 0.0, False), (0.5, 1.0, 0.1, False), (0.0, 1.0, 0.1, True)],
)
@pytest.mark.parametrize("degen", ["projection", "logits"])
@pytest.mark.parametrize("block_rows", [None, 3], ids=["chunks", "chunks in blocks"])
def test_lfd_poe(kw, beta, lam, eps, eos_in_product, degen, block_rows, monkeypatch):
    if block_rows is not None:  # the CPU's elementwise blocks: 4-row chunks as 3 + 1 rows
        monkeypatch.setattr(chunking, "CPU_BLOCK_ELEMENTS", block_rows * V)
    case = Case(12, **kw)
    t, real = _flat(case)
    g = torch.Generator().manual_seed(13)
    hd = torch.randn(B * T, 3, generator=g, dtype=torch.float64).requires_grad_(True)
    wd = torch.randn(V, 3, generator=g, dtype=torch.float64).requires_grad_(True)
    bd = torch.randn(V, generator=g, dtype=torch.float64)
    zd = (hd @ wd.t() + bd).detach()
    source = Projection(hd, wd, bd) if degen == "projection" else zd

    def ours(h, w, b):
        out = lfd_loss(
            Projection(h, w, b), source, t, beta, lam, eps, PAD, EOS, eos_in_product, rows=ROWS
        )
        assert "degen_nll" not in out  # a training step: no diagnostic
        return out["loss"], out

    case.compare(
        ours,
        lambda z: _poe_reference(z, zd, t, real, beta, lam, eps, eos_in_product),
        ["poe_nll", "main_nll", "main_eos_nll"],
    )
    assert hd.grad is None and wd.grad is None  # nothing reaches the degenerative model
    with torch.no_grad():  # validation: the degenerative model's own NLL
        out = lfd_loss(
            Projection(case.h0, case.W, case.b),
            source,
            t,
            beta,
            lam,
            eps,
            PAD,
            EOS,
            eos_in_product,
            rows=ROWS,
        )
    ref = (zd.logsumexp(-1) - zd.gather(-1, t[:, None]).squeeze(-1))[real].sum()
    torch.testing.assert_close(out["degen_nll"], ref, **TOL)


IGNORED = {
    "tailr": lambda s, t, pad: tailr_loss(s, t.reshape(-1), 0.1, 0.3, 0.1, pad, True),
    "mixce": lambda s, t, pad: mixce_loss(s, t.reshape(-1), 0.5, pad, True),
    "error_norm_truncation": lambda s, t, pad: error_norm_truncated_loss(
        s, t.reshape(-1), 1.0, 0.1, pad, accuracy=True
    ),
    "unlikelihood": lambda s, t, pad: unlikelihood_loss(s, t, 1.0, pad, True),
    "loss_truncation": lambda s, t, pad: loss_truncation_loss(s, t, 2.5, 0.1, pad, accuracy=True),
    "truncated_ce": lambda s, t, pad: truncated_nll_loss(s, t.reshape(-1), 0.5, pad, accuracy=True),
    "lfd_poe": lambda s, t, pad: lfd_loss(
        s,
        torch.ones(B * T, V, dtype=torch.float64),
        t.reshape(-1),
        1.0,
        0.5,
        0.1,
        pad,
        EOS,
        accuracy=True,
    ),
}


@pytest.mark.parametrize("source", ["logits", "projection"])
@pytest.mark.parametrize("name", list(IGNORED))
def test_ignored_positions_may_hold_any_id_such_as_minus_100(name, source):
    # transformers marks ignored labels -100 (not a vocabulary id), fairseq its pad symbol:
    # the same batch either way gives the same sums and gradients.
    case = Case(14)
    minus = case.target.masked_fill(case.target == PAD, -100)
    results = []
    for target, pad in ((case.target, PAD), (minus, -100)):
        leaves = case.leaves()
        h, w, b = case.features(leaves), leaves["W"], leaves.get("b")
        src = Projection(h, w, b) if source == "projection" else h @ w.t() + b
        out = IGNORED[name](src, target, pad)
        out["loss"].backward()
        results.append((out, leaves["W"].grad))
    (a, grad_a), (b, grad_b) = results
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(torch.as_tensor(a[key]), torch.as_tensor(b[key]), **TOL)
    torch.testing.assert_close(grad_a, grad_b, **TOL)
