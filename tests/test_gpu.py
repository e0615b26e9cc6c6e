"""The objectives and the fused path on a GPU: ``pytest -m gpu`` (run by scripts/gpu_check.py).

``DIVGEN_TEST_DEVICE`` picks the device (default ``cuda``; these tests are skipped
without CUDA then). The GPU check's ``--cpu-tiny`` mode runs them with ``cpu``, so that
the check cannot rot on machines without a GPU.

On the device: every objective's fused and unfused losses and gradients in fp32 against
a float64 computation on the CPU; fp16 and bf16 fused against unfused (the tolerances of
test_half_precision.py); every fused matmul in half precision, also under CUDA autocast
(``--amp``); rows without a gradient exactly 0 on NaN-filled new memory; the chunk size
an accelerator gets; and the deferred finiteness check of the degenerative model.
"""

import os

import pytest
import torch

import test_half_precision as half
from fairseq_divgen.losses import Projection, chunking
from fairseq_divgen.losses.finite import FiniteWatch

pytestmark = pytest.mark.gpu
DEVICE = torch.device(os.environ.get("DIVGEN_TEST_DEVICE", "cuda"))


def _on_device(h, w, target):
    return h.to(DEVICE), w.to(DEVICE), target.to(DEVICE)


def _grads(name, source_of, h, w, target, scale=1024.0):
    h, w = h.clone().requires_grad_(True), w.clone().requires_grad_(True)
    out = half.OBJECTIVES[name](source_of(h, w), target)
    (out["loss"] * scale).backward()
    return [t.detach().double().cpu() for t in (out["loss"], h.grad / scale, w.grad / scale)]


def _fused(h, w):
    return Projection(h, w, None)


def _unfused(h, w):
    return torch.nn.functional.linear(h, w)


@pytest.mark.parametrize("path", ["fused", "unfused"])
@pytest.mark.parametrize("name", list(half.OBJECTIVES))
def test_fp32_on_the_device_matches_float64_on_the_cpu(name, path):
    h, w, target = half._problem(torch.float32, seed=2)
    source_of = _fused if path == "fused" else _unfused
    ours = _grads(name, source_of, *_on_device(h, w, target))
    exact = _grads(name, _fused, h.double(), w.double(), target)
    for a, b in zip(ours, exact):
        assert half._relative(a, b) <= 1e-5


@pytest.mark.parametrize("dtype", half.HALF, ids=["fp16", "bf16"])
@pytest.mark.parametrize("name", list(half.OBJECTIVES))
def test_half_precision_fused_matches_unfused_on_the_device(name, dtype):
    problem = _on_device(*half._problem(dtype, seed=1))
    fused, unfused = _grads(name, _fused, *problem), _grads(name, _unfused, *problem)
    tol = half.TOLERANCE[dtype]
    for part, a, b in zip(("loss", "h", "W"), fused, unfused):
        assert torch.isfinite(a).all()
        assert half._relative(a, b) <= tol["loss" if part == "loss" else "grad"], part


@pytest.mark.parametrize("name", list(half.OBJECTIVES))
def test_fused_matmuls_run_in_half_precision_on_the_device(name):
    h, w, target = _on_device(*half._problem(torch.float16))
    h.requires_grad_(True)
    w.requires_grad_(True)
    with half.MatmulDtypes() as mode:
        out = half.OBJECTIVES[name](Projection(h, w, None), target)
        out["loss"].backward()
    assert len(mode.seen) >= 3
    assert all(d in half.HALF for _, dtypes in mode.seen for d in dtypes), mode.seen


def test_under_autocast_the_fused_matmuls_run_in_half_precision_on_the_device():
    h, w, target = _on_device(*half._problem(torch.float32))
    h.requires_grad_(True)
    w.requires_grad_(True)
    dtype = torch.float16 if DEVICE.type == "cuda" else torch.bfloat16
    with half.MatmulDtypes() as mode, torch.autocast(DEVICE.type, dtype=dtype):
        out = half.OBJECTIVES["lfd_poe"](Projection(h, w, None), target)
    out["loss"].backward()
    assert all(d == dtype for _, dtypes in mode.seen for d in dtypes), mode.seen
    assert h.grad.dtype == w.grad.dtype == torch.float32 and torch.isfinite(w.grad).all()


@pytest.mark.parametrize("path", ["fused", "unfused"])
def test_gradients_are_finite_on_nan_filled_new_memory_on_the_device(path, memory_fill):
    h, w, target = _on_device(*half._problem(torch.float16, seed=3))
    source_of = _fused if path == "fused" else _unfused
    for name in half.OBJECTIVES:
        loss, grad_h, grad_w = _grads(name, source_of, h, w, target)
        assert torch.isfinite(grad_h).all() and torch.isfinite(grad_w).all(), name


def test_an_accelerator_gets_larger_chunks_and_no_blocks():
    rows = chunking.chunk_rows(DEVICE, 32000)
    if DEVICE.type == "cpu":
        assert rows == chunking.CHUNK_ELEMENTS // 32000
        assert chunking.block_rows(DEVICE, 32000, rows) < rows
    else:
        assert rows == chunking.CHUNK_ELEMENTS * chunking.ACCELERATOR_FACTOR // 32000
        assert chunking.block_rows(DEVICE, 32000, rows) == rows


def test_the_degenerative_models_finiteness_is_read_back_without_waiting():
    watch = FiniteWatch()
    logits = torch.tensor([1.0, float("inf")], device=DEVICE).half()
    watch.record(torch.isfinite(logits).all(), logits.dtype)
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()  # fairseq's own per-step synchronisation
    assert watch.failed() == torch.float16
    assert watch.failed() is None  # reported once
    watch.record(torch.isfinite(logits[:1]).all(), logits.dtype)
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()
    assert watch.failed() is None
