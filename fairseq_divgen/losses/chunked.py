"""One objective, two ways to run it: over the logits a model made, or fused with the
output projection (``--fused-output``).

An objective (:class:`ChunkObjective`) is written once, as a function of the fp32 logits
of some rows: it returns their loss sums and, in closed form, dL/dz of those rows.
:func:`chunked_loss` runs it a chunk of rows at a time (sizes: ``chunking.py``) over

- a tensor of logits ``(N, V)``, or of log-probabilities: every objective depends on a
  row only through its softmax, so normalised scores give the same loss and, through
  the normalisation, the same gradient to whatever produced them. The stored gradient
  is ``dL/dz``, one ``(N, V)`` tensor; there is no log-softmax and no autograd graph over
  the vocabulary;
- a :class:`Projection` ``(h, W, b)``: features ``(N, d)`` and the output layer, whose
  logits ``z = h W^T + b`` are made one chunk at a time and never exist at once (the
  approach of fused linear cross-entropy kernels, liger-kernel and Wijmans et al., "Cut
  Your Losses in Large-Vocabulary Language Models", arXiv 2411.09009, here in plain
  PyTorch for any objective). Per chunk ``c``: ``z_c = h_c W^T + b``, the objective's
  ``g = dL/dz_c``, then ``dL/dh_c = g W`` and ``dL/dW += g^T h_c`` (``dL/db += sum_rows g``):
  three matmuls over all rows, as the unfused forward and backward.

Why the gradient is computed in the forward: the backward would need every chunk's logits
again (a second projection) or all of them kept (the memory this avoids). fairseq calls
backward once per forward and never retains the graph, so the stored gradient is scaled
in place by the incoming gradient (the loss scale, under fp16); a second backward raises.

Precision. The objective runs in fp32 (fp64 for fp64 inputs). The projection's matmuls
run in the compute dtype: the features' dtype, or autocast's under ``--amp`` (the weight
cast to it once per call, as autocast would per use). In half precision (fp16, bf16) the
gradient matmuls take ``g`` cast to half precision, since they are the point of tensor
cores; fairseq's loss scale is applied only in backward, so ``g`` is first scaled by a
power of two (exact), chosen on the device, so that nothing overflows and little
underflows:

- ``dL/dh_c = (s g) W / s`` with ``s`` such that the largest ``|s g|`` is about 2^8;
- ``dL/dW += (s' g)^T h_c / s'``, a sum over the chunk's rows, with ``s'`` such that no
  entry can exceed 2^15 (``rows * max|g| * max|h_c| * s' <= 2^15``), summed over chunks in
  fp32.

The stored gradients are fp32 and take the parameters' dtype only after the loss scale,
as autograd's would. Rows an objective gives no gradient get exactly 0.
"""

import math
from typing import Dict, NamedTuple, Optional, Tuple, Union

import torch
from torch import Tensor

from .chunking import chunk_rows

HALF = (torch.float16, torch.bfloat16)
GRAD_H_EXPONENT = 8  # log2 of the largest scaled |g| in dL/dh's half-precision matmul
GRAD_W_EXPONENT = 15  # log2 of the bound on every entry of a chunk's half-precision dL/dW


def accumulator_dtype(dtype: torch.dtype) -> torch.dtype:
    """fp32, or fp64 for fp64 inputs: the dtype of the objectives' math."""
    return torch.promote_types(dtype, torch.float32)


def autocast_dtype(device_type: str) -> Optional[torch.dtype]:
    """The dtype autocast gives a linear layer on ``device_type`` now; None outside autocast."""
    try:
        if torch.is_autocast_enabled(device_type):
            return torch.get_autocast_dtype(device_type)
    except TypeError:  # torch < 2.4: CUDA autocast only
        if device_type == "cuda" and torch.is_autocast_enabled():
            return torch.get_autocast_gpu_dtype()
    return None


class Projection(NamedTuple):
    """Features and output layer: the logits ``h W^T + b``, never made at once."""

    h: Tensor  # (N, d)
    weight: Tensor  # (V, d)
    bias: Optional[Tensor]  # (V,) or None

    def select(self, index: Tensor) -> "Projection":
        """The same output layer over the rows ``index`` of the features."""
        return Projection(self.h.index_select(0, index), self.weight, self.bias)


class LogProbs(NamedTuple):
    """Log-probabilities ``(..., V)`` taken as they are (not renormalised): the sums are
    then computed exactly as fairseq's losses compute them from ``get_normalized_probs``."""

    lprobs: Tensor


Source = Union[Tensor, LogProbs, Projection]  # logits, log-probabilities, or a projection


def source_shape(source: Source) -> Tuple[int, int]:
    """``(N, V)`` of a source."""
    if isinstance(source, Projection):
        return source.h.size(0), source.weight.size(0)
    if isinstance(source, LogProbs):
        source = source.lprobs
    vocab = source.shape[-1]
    return source.numel() // max(1, vocab), vocab


def source_dtype(source: Source) -> torch.dtype:
    """The dtype of a source's logits, log-probabilities or features."""
    return (source[0] if isinstance(source, tuple) else source).dtype


def requires_grad(source: Source) -> bool:
    """Whether a loss of ``source`` would be differentiated now."""
    tensors = source if isinstance(source, tuple) else (source,)
    grad = any(t is not None and t.requires_grad for t in tensors)
    return grad and torch.is_grad_enabled()


class ChunkObjective:
    """An objective's sums and dL/dz for a chunk of rows, defined once in closed form.

    ``names`` are the sums' names, the loss first; with ``accuracy`` a last sum
    ``n_correct`` counts the non-pad rows whose argmax is the target. Row-aligned inputs
    (targets, masks, candidates) are indexed by the chunk's row slice.
    """

    names: Tuple[str, ...] = ("loss",)
    normalized = False  # the rows are log-probabilities (set by chunked_loss)

    def __init__(self, target: Tensor, pad: int, accuracy: bool = False):
        target = target.reshape(-1)
        self.pad = pad
        self.accuracy = accuracy
        # An ignored position may hold any id (fairseq's pad symbol, or -100 as in
        # transformers): its rows are masked out, and it reads the logit of symbol 0.
        self.real = target.ne(pad)
        self.target = target.masked_fill(~self.real, 0)

    @property
    def all_names(self) -> Tuple[str, ...]:
        """The names of every sum returned, ``n_correct`` included."""
        return self.names + (("n_correct",) if self.accuracy else ())

    def __call__(self, z: Tensor, rows: slice, want_grad: bool, out: Optional[Tensor] = None):
        """``(sums, dL/dz or None)`` of the fp32 logits ``z`` of ``rows``; the gradient is
        written into ``out`` (every element) when it is given."""
        t, real = self.target[rows].view(-1, 1), self.real[rows].view(-1, 1)
        correct = None
        if self.accuracy:  # before chunk() may reuse the logits' memory
            correct = (z.argmax(-1, keepdim=True).eq(t) & real).sum().to(z.dtype)
        sums, grad = self.chunk(z, t, real, rows, want_grad, out)
        if correct is not None:
            sums = torch.cat([sums, correct.view(1)])
        return sums, grad

    # An objective over logits (not a Projection) may also define
    # ``finish(sums, grad) -> sums``: called once every chunk is done, with the summed
    # vector and the stored (N, V) gradient (None without one), e.g. to keep some rows.

    def chunk(
        self,
        z: Tensor,
        t: Tensor,
        real: Tensor,
        rows: slice,
        want_grad: bool,
        out: Optional[Tensor],
    ):
        """Sums (a vector in ``z``'s dtype, in the order of ``names``) and dL/dz or None;
        ``t`` (r, 1) the targets (0 where ignored), ``real`` (r, 1) the positions not ignored."""
        raise NotImplementedError


def _pow2_scale(bound: Tensor, exponent: int) -> Tensor:
    """The power of two ``s`` with ``s * bound`` in (2^(exponent-1), 2^exponent] (0-dim,
    on the device; a zero or non-finite bound gives a scale that keeps it so)."""
    tiny = torch.finfo(torch.float32).tiny
    e = exponent - torch.ceil(torch.log2(bound.float().clamp(min=tiny)))
    return torch.exp2(e.clamp(-126.0, 126.0))


def _scaled_half(g: Tensor, scale: Tensor, dtype: torch.dtype) -> Tensor:
    """``scale * g`` in ``dtype`` (one pass)."""
    return torch.mul(g, scale, out=torch.empty(g.shape, dtype=dtype, device=g.device))


class OutputLayer:
    """The output projection in the compute dtype, chunk by chunk: its logits, and the
    gradients of ``h``, ``W`` and ``b`` from a chunk's dL/dz (module docstring)."""

    def __init__(self, h: Tensor, weight: Tensor, bias: Optional[Tensor], dtype=None):
        dtype = dtype or autocast_dtype(h.device.type) or h.dtype
        self.h = h.to(dtype)
        self.weight = weight.to(dtype)  # once per call: a no-op unless autocast casts
        self.bias = None if bias is None else bias.to(dtype)
        self.dtype = dtype
        self.acc = accumulator_dtype(dtype)

    def logits(self, rows: slice) -> Tensor:
        """Accumulator-dtype logits of ``rows`` (the matmul in the compute dtype)."""
        h = self.h[rows]
        w = self.weight.t()
        z = torch.mm(h, w) if self.bias is None else torch.addmm(self.bias, h, w)
        return z.to(self.acc)

    def add_gradients(self, g: Tensor, rows: slice, grad_h, grad_w, grad_b) -> None:
        """Write ``dL/dh`` of ``rows`` into ``grad_h`` and add ``dL/dW``, ``dL/db`` (each
        None when not wanted) from the chunk's dL/dz ``g`` (accumulator dtype)."""
        h = self.h[rows]
        if self.dtype not in HALF:
            if grad_h is not None:
                torch.mm(g, self.weight, out=grad_h[rows])
            if grad_w is not None:
                grad_w.addmm_(g.t(), h)
        else:
            amax = torch.linalg.vector_norm(g, math.inf)
            if grad_h is not None:
                s = _pow2_scale(amax, GRAD_H_EXPONENT)
                part = torch.mm(_scaled_half(g, s, self.dtype), self.weight)
                torch.div(part.to(self.acc), s, out=grad_h[rows])  # fp32 before unscaling
            if grad_w is not None:
                hmax = torch.linalg.vector_norm(h, math.inf).float()
                s = _pow2_scale(amax * hmax * h.size(0), GRAD_W_EXPONENT)
                part = torch.mm(_scaled_half(g, s, self.dtype).t(), h)
                grad_w.addcdiv_(part, s)
        if grad_b is not None:
            grad_b += g.sum(0)


class FrozenLogits:
    """Logits of some rows of a model that is never differentiated (LFD's degenerative
    model): from its full ``(N, V)`` logits, or made from its :class:`Projection` for those
    rows only. ``finite`` (a 0-dim bool tensor on the device) records whether no logit made
    so far was +inf or NaN."""

    def __init__(self, source: Source):
        if isinstance(source, Projection):
            bias = None if source.bias is None else source.bias.detach()
            self.layer = OutputLayer(source.h.detach(), source.weight.detach(), bias)
            self.logits, device = None, source.h.device
        else:
            self.layer = None
            self.logits, device = source.detach(), source.device
        self.finite = torch.ones((), dtype=torch.bool, device=device)

    @property
    def dtype(self) -> torch.dtype:
        """The dtype the logits are made in (before the upcast)."""
        return self.layer.dtype if self.layer is not None else self.logits.dtype

    def __call__(self, rows: slice) -> Tensor:
        """Accumulator-dtype logits of ``rows``."""
        if self.layer is not None:
            with torch.no_grad():
                z = self.layer.logits(rows)
        else:
            z = self.logits[rows]
            z = z.to(accumulator_dtype(z.dtype))
        # NaN or +-inf anywhere makes the minimum or the maximum so: one read-only pass
        # (isfinite(z).all() costs about 40 times more on the CPU). -inf matters too: a
        # logit below the half-precision range makes the product's smoothing term infinite
        low, high = torch.aminmax(z)
        self.finite &= torch.isfinite(low) & torch.isfinite(high)
        return z


class _ChunkedLoss(torch.autograd.Function):
    """Sums of an objective over chunks of logits (``z``) or of a projection (``h``,
    ``weight``, ``bias``); the gradients are computed in the forward."""

    @staticmethod
    def forward(ctx, objective, rows, n_sums, compute_dtype, z, h, weight, bias):
        device = (h if z is None else z).device
        with torch.autocast(device.type, enabled=False):  # every cast is explicit
            if z is None:
                layer = OutputLayer(h, weight, bias, compute_dtype)
                grads, sums, dtypes = _forward_projection(
                    ctx, objective, rows, n_sums, layer, h, weight, bias
                )
            else:
                grads, sums, dtypes = _forward_logits(ctx, objective, rows, n_sums, z)
        ctx.save_for_backward(*grads)
        ctx.dtypes = dtypes
        ctx.consumed = False
        stats = sums[1:]
        ctx.mark_non_differentiable(stats)
        return sums[0].clone(), stats

    @staticmethod
    def backward(ctx, grad_loss, _grad_stats):
        if ctx.consumed:
            raise RuntimeError("the chunked loss keeps its gradient for one backward only")
        ctx.consumed = True
        # In place: the stored gradient is used once (fairseq never retains the graph).
        grads = [
            None if g is None else g.mul_(grad_loss).to(dtype)
            for g, dtype in zip(ctx.saved_tensors, ctx.dtypes)
        ]
        return (None, None, None, None, *grads)


def _chunks(n: int, rows: int):
    return (slice(start, min(start + rows, n)) for start in range(0, n, rows))


def _forward_logits(ctx, objective, rows, n_sums, z):
    want_grad = ctx.needs_input_grad[4]
    acc = accumulator_dtype(z.dtype)
    n, vocab = z.shape
    grad = torch.empty((n, vocab), dtype=acc, device=z.device) if want_grad else None
    sums = torch.zeros((n_sums,), dtype=acc, device=z.device)
    for sl in _chunks(n, rows):
        out = None if grad is None else grad[sl]
        part, g = objective(z[sl].to(acc), sl, want_grad, out)
        sums += part
        if out is not None:
            if g is None:
                out.zero_()
            elif g.data_ptr() != out.data_ptr():
                out.copy_(g)
    finish = getattr(objective, "finish", None)
    if finish is not None:  # an objective that selects rows once every row is seen
        sums = finish(sums, grad)
    return (grad, None, None, None), sums, (z.dtype, None, None, None)


def _forward_projection(ctx, objective, rows, n_sums, layer, h, weight, bias):
    if getattr(objective, "finish", None) is not None:
        raise ValueError(
            f"{type(objective).__name__} selects rows once all are seen (finish): it runs over "
            "logits only, not over a Projection"
        )
    need_h, need_w, need_b = ctx.needs_input_grad[5:8]
    acc = layer.acc
    n, dim = h.shape
    vocab = weight.size(0)
    want_grad = need_h or need_w or need_b
    grad_h = torch.zeros((n, dim), dtype=acc, device=h.device) if need_h else None
    grad_w = torch.zeros((vocab, dim), dtype=acc, device=h.device) if need_w else None
    grad_b = torch.zeros((vocab,), dtype=acc, device=h.device) if need_b else None
    sums = torch.zeros((n_sums,), dtype=acc, device=h.device)
    for sl in _chunks(n, rows):
        part, g = objective(layer.logits(sl), sl, want_grad)
        sums += part
        if g is not None:
            layer.add_gradients(g, sl, grad_h, grad_w, grad_b)
    dtypes = (None, h.dtype, weight.dtype, None if bias is None else bias.dtype)
    return (None, grad_h, grad_w, grad_b), sums, dtypes


def chunked_loss(
    source: Source, objective: ChunkObjective, rows: Optional[int] = None
) -> Dict[str, Tensor]:
    """The sums of ``objective`` over all rows of ``source``, by name (``objective.all_names``).

    ``source``: ``(N, V)`` logits (any dtype), :class:`LogProbs`, or a :class:`Projection`.
    ``"loss"`` is the only entry with a gradient (to the logits, or to
    ``h``, ``weight`` and ``bias``, whichever require one; a weight shared with an input
    embedding gets the sum of both gradients). ``rows`` per chunk defaults to
    :func:`chunking.chunk_rows`. Under ``torch.no_grad()`` only the sums are computed.
    """
    n, vocab = source_shape(source)
    objective.normalized = isinstance(source, LogProbs)
    if objective.normalized:
        source = source.lprobs
    if isinstance(source, Projection):
        z, (h, weight, bias) = None, source
        device = h.device
    else:
        z, h, weight, bias = source.reshape(n, vocab), None, None, None
        device = z.device
    if not torch.is_grad_enabled():
        z, h, weight, bias = (None if t is None else t.detach() for t in (z, h, weight, bias))
    rows = rows or chunk_rows(device, vocab)
    names = objective.all_names
    # autocast's dtype (--amp) is read here: the Function's forward runs without autocast
    compute = None if h is None else autocast_dtype(device.type)
    loss, stats = _ChunkedLoss.apply(objective, rows, len(names), compute, z, h, weight, bias)
    return {"loss": loss, **dict(zip(names[1:], stats.unbind(0)))}
