"""The fused output path in half precision, as GPUs run it (here on the CPU).

- Every matmul of the fused path (the projection, dL/dh, dL/dW) takes half-precision
  operands under fp16 and bf16 parameters (``--fp16``, ``--memory-efficient-fp16``) and
  under autocast (``--amp``): recorded with a dispatch mode, so a matmul that runs in
  fp32 fails the test.
- Fused losses and gradients in fp16 and bf16 equal the unfused path's (the model's own
  half-precision output layer, then the loss on its logits, autograd through the layer)
  within stated tolerances, both measured against an fp32 computation of the same
  half-precision inputs.
"""

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from fairseq_divgen.losses import (
    Projection,
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
B, T, V, D = 6, 9, 101, 16
ROWS = 12  # rows per chunk: several chunks (loss truncation: whole sequences, 9 * 2 rows)
MATMULS = {"aten.mm.default", "aten.addmm.default", "aten.bmm.default", "aten.baddbmm.default"}
HALF = (torch.float16, torch.bfloat16)

OBJECTIVES = {
    "tailr": lambda s, t: tailr_loss(s, t.reshape(-1), 0.1, 0.3, 0.1, PAD, rows=ROWS),
    "mixce": lambda s, t: mixce_loss(s, t.reshape(-1), 0.5, PAD, rows=ROWS),
    "error_norm_truncation": lambda s, t: error_norm_truncated_loss(
        s, t.reshape(-1), 1.0, 0.1, PAD, rows=ROWS
    ),
    "unlikelihood": lambda s, t: unlikelihood_loss(s, t, 1.0, PAD, rows=ROWS),
    "loss_truncation": lambda s, t: loss_truncation_loss(s, t, CUTOFF, 0.1, PAD, rows=2 * T),
    "truncated_ce": lambda s, t: truncated_nll_loss(s, t.reshape(-1), 0.5, PAD, rows=ROWS),
    "lfd_poe": lambda s, t: lfd_loss(
        s, _degenerative(s), t.reshape(-1), 1.0, 3.0, 0.1, PAD, EOS, rows=ROWS
    ),
}


# loss truncation's cutoff: about the median sequence NLL of the problems below, so that
# about half the sequences are dropped
CUTOFF = 6.3


def _degenerative(source):
    """Frozen logits of the same rows (fixed, independent of the main model)."""
    g = torch.Generator().manual_seed(7)
    n = B * T
    dtype = source.h.dtype if isinstance(source, Projection) else source.dtype
    return (torch.randn(n, V, generator=g) * 2).to(dtype)


def _problem(dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(B * T, D, generator=g).to(dtype)
    w = (torch.randn(V, D, generator=g) * 0.5).to(dtype)
    target = torch.randint(2, V, (B, T), generator=g)
    target[1, 6:] = PAD
    target[4, 3:] = PAD
    target[0, 8] = EOS
    return h, w, target


class MatmulDtypes(TorchDispatchMode):
    """Records the dtypes of the tensor operands of every matmul run under it."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if str(func) in MATMULS:
            self.seen.append((str(func), [a.dtype for a in args if isinstance(a, torch.Tensor)]))
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("dtype", HALF, ids=["fp16", "bf16"])
@pytest.mark.parametrize("name", list(OBJECTIVES))
def test_fused_matmuls_run_in_half_precision(name, dtype):
    h, w, target = _problem(dtype)
    h.requires_grad_(True)
    w.requires_grad_(True)
    with MatmulDtypes() as mode:
        out = OBJECTIVES[name](Projection(h, w, None), target)
        out["loss"].backward()
    assert len(mode.seen) >= 3  # the projection and both gradients, per chunk
    assert all(d in HALF for _, dtypes in mode.seen for d in dtypes), mode.seen


def test_under_autocast_the_fused_matmuls_run_in_the_autocast_dtype():
    # --amp: fp32 parameters and features, half-precision matmuls (the weight cast once)
    h, w, target = _problem(torch.float32)
    h.requires_grad_(True)
    w.requires_grad_(True)
    with MatmulDtypes() as mode, torch.autocast("cpu", dtype=torch.bfloat16):
        out = OBJECTIVES["tailr"](Projection(h, w, None), target)
    out["loss"].backward()
    assert len(mode.seen) >= 3
    assert all(d == torch.bfloat16 for _, dtypes in mode.seen for d in dtypes), mode.seen
    assert h.grad.dtype == w.grad.dtype == torch.float32


def _fused(name, h, w, target):
    h, w = h.clone().requires_grad_(True), w.clone().requires_grad_(True)
    out = OBJECTIVES[name](Projection(h, w, None), target)
    (out["loss"] * 1024.0).backward()  # a loss scale, as fairseq's fp16 optimizer applies
    return out["loss"].double(), h.grad.double() / 1024, w.grad.double() / 1024


def _unfused(name, h, w, target):
    """The model's own output layer in ``h``'s dtype, the loss on its logits."""
    h, w = h.clone().requires_grad_(True), w.clone().requires_grad_(True)
    out = OBJECTIVES[name](torch.nn.functional.linear(h, w), target)
    (out["loss"] * 1024.0).backward()
    return out["loss"].double(), h.grad.double() / 1024, w.grad.double() / 1024


def _relative(a, b):
    return ((a - b).abs().max() / b.abs().max().clamp(min=1e-30)).item()


# Largest differences allowed, relative to the largest entry of the fp32 computation:
# half precision rounds the logits (fp16: 11 bits, bf16: 8 bits) and both paths'
# gradient matmuls; the fused path sums dL/dW over chunks in fp32.
# Measured on these problems: fp16 up to 1e-4 (loss) and 9e-4 (gradients), bf16 up to
# 1.4e-3 and 9e-3, for the fused and the unfused path alike.
TOLERANCE = {
    torch.float16: {"loss": 5e-4, "grad": 2e-3},
    torch.bfloat16: {"loss": 5e-3, "grad": 2e-2},
}


@pytest.mark.parametrize("dtype", HALF, ids=["fp16", "bf16"])
@pytest.mark.parametrize("name", list(OBJECTIVES))
def test_fused_half_precision_matches_the_unfused_path(name, dtype):
    h, w, target = _problem(dtype, seed=1)
    fused = _fused(name, h, w, target)
    unfused = _unfused(name, h, w, target)
    exact = _fused(name, h.float(), w.float(), target)  # the same half inputs, in fp32
    tol = TOLERANCE[dtype]
    for part, a, b, c in zip(("loss", "h", "W"), fused, unfused, exact):
        kind = "loss" if part == "loss" else "grad"
        assert torch.isfinite(a).all() and c.abs().max() > 0
        assert _relative(a, b) <= tol[kind], (part, _relative(a, b))
        assert _relative(a, c) <= tol[kind], (part, _relative(a, c))
