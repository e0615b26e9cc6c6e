"""The output projection and the loss together, a chunk of tokens at a time.

No criterion needs the (N, V) logits ``z = h W^T + b`` at once: each one reduces them
row by row to a few sums, and its gradient with respect to a row of logits has a
closed form. So the projection and the loss run together over chunks of rows, and
only one chunk's logits (about ``CHUNK_ELEMENTS`` numbers) exist at a time: the
approach of fused linear cross-entropy kernels (liger-kernel; Wijmans et al., "Cut
Your Losses in Large-Vocabulary Language Models", arXiv 2411.09009), here in plain
PyTorch and for any objective given as a per-chunk callback (``fused_chunks.py``).

Per chunk ``c`` of rows: ``z_c = h_c W^T + b`` in the input dtype, upcast to fp32
(fp64 for fp64 inputs); the callback returns the chunk's loss sums and ``dL/dz_c``;
then ``dL/dh_c = dL/dz_c W`` and ``dL/dW += dL/dz_c^T h_c`` (and ``dL/db += sum_rows
dL/dz_c``), in fp32 accumulators. That is three matmuls over all rows, as the unfused
forward and backward, and no (N, V) tensor.

Why the gradient is computed in the forward: the backward pass would need the logits
of every chunk again (a second projection) or all of them kept (the memory this
avoids). The gradient is instead kept in its (N, d) / (V, d) form, and the backward
only scales it by the incoming gradient (the loss scale, under fp16). fairseq calls
``backward`` once per forward and never retains the graph, so the stored gradient is
consumed in place; a second backward raises. The stored gradient stays in fp32, so
nothing underflows in half precision before fairseq's loss scale is applied.
"""
from typing import Callable, Dict, NamedTuple, Optional, Tuple

import torch
from torch import Tensor

# Rows per chunk: about this many elements per (rows, V) temporary (16 MiB in fp32).
CHUNK_ELEMENTS = 1 << 22

# A per-chunk callback: (fp32 logits of some rows, their row slice, want_grad) ->
# (fp32 vector of loss sums, first entry the loss; dL/dlogits of those rows or None).
ChunkFn = Callable[[Tensor, slice, bool], Tuple[Tensor, Optional[Tensor]]]


def chunk_rows(vocab: int, multiple: int = 1) -> int:
    """Rows per chunk for a vocabulary of ``vocab``: about ``CHUNK_ELEMENTS`` elements,
    a positive multiple of ``multiple`` (e.g. whole sequences)."""
    return multiple * max(1, CHUNK_ELEMENTS // max(1, vocab * multiple))


def accumulator_dtype(dtype: torch.dtype) -> torch.dtype:
    """fp32, or fp64 for fp64 inputs: the dtype of the logits the callbacks see."""
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


def project(h: Tensor, weight: Tensor, bias: Optional[Tensor]) -> Tensor:
    """``h W^T + b`` in ``h``'s dtype (the unfused output layer's precision), upcast to
    the accumulator dtype."""
    w = weight.to(h.dtype)
    z = torch.mm(h, w.t()) if bias is None else torch.addmm(bias.to(h.dtype), h, w.t())
    return z.to(accumulator_dtype(h.dtype))


class Projection(NamedTuple):
    """Features and output layer of a model that is never differentiated (the frozen
    degenerative model of LFD): its logits are made one chunk at a time."""

    h: Tensor  # (N, d)
    weight: Tensor  # (V, d)
    bias: Optional[Tensor]

    def logits(self, rows: slice) -> Tensor:
        """Accumulator-dtype logits of ``rows``, without gradient."""
        with torch.no_grad():
            return project(self.h[rows], self.weight, self.bias)

    def all_finite(self, rows: int) -> Tensor:
        """Whether every logit is finite in the model's own dtype (0-dim bool tensor),
        checked ``rows`` rows at a time."""
        ok = torch.ones((), dtype=torch.bool, device=self.h.device)
        w = self.weight.to(self.h.dtype)
        b = None if self.bias is None else self.bias.to(self.h.dtype)
        with torch.no_grad():
            for start in range(0, self.h.size(0), rows):
                h_c = self.h[start : start + rows]
                z = torch.mm(h_c, w.t()) if b is None else torch.addmm(b, h_c, w.t())
                ok &= torch.isfinite(z).all()
        return ok


class _FusedOutputLoss(torch.autograd.Function):
    """Loss sums of ``objective`` over ``h W^T + b``; gradients computed in the forward."""

    @staticmethod
    def forward(ctx, h, weight, bias, objective, rows, n_sums):
        need_h, need_w, need_b = ctx.needs_input_grad[:3]
        want_grad = need_h or need_w or need_b
        acc = accumulator_dtype(h.dtype)
        n, dim = h.shape
        vocab = weight.size(0)
        grad_h = h.new_empty((n, dim), dtype=acc) if need_h else None
        grad_w = weight.new_zeros((vocab, dim), dtype=acc) if need_w else None
        grad_b = weight.new_zeros((vocab,), dtype=acc) if need_b else None
        w_acc = weight.to(acc) if need_h else None
        sums = h.new_zeros((n_sums,), dtype=acc)
        # The logits in h's dtype, everything else in acc: no autocast inside (under
        # --amp it would run the fp32 gradient matmuls in half precision).
        with torch.autocast(h.device.type, enabled=False):
            for start in range(0, n, rows):
                sl = slice(start, min(start + rows, n))
                h_c = h[sl]
                part, g = objective(project(h_c, weight, bias), sl, want_grad)
                sums += part
                if g is None:
                    continue
                if need_h:
                    torch.mm(g, w_acc, out=grad_h[sl])
                if need_w:
                    grad_w.addmm_(g.t(), h_c.to(acc))
                if need_b:
                    grad_b += g.sum(0)
        ctx.save_for_backward(grad_h, grad_w, grad_b)
        ctx.dtypes = (h.dtype, weight.dtype, None if bias is None else bias.dtype)
        ctx.consumed = False
        stats = sums[1:]
        ctx.mark_non_differentiable(stats)
        return sums[0].clone(), stats

    @staticmethod
    def backward(ctx, grad_loss, _grad_stats):
        if ctx.consumed:
            raise RuntimeError("the fused output loss keeps its gradient for one backward only")
        ctx.consumed = True
        grads = []
        for g, dtype in zip(ctx.saved_tensors, ctx.dtypes):
            # In place: used once (fairseq never retains the graph).
            grads.append(None if g is None else g.mul_(grad_loss).to(dtype))
        return (*grads, None, None, None)


def fused_output_loss(
    h: Tensor,
    weight: Tensor,
    bias: Optional[Tensor],
    objective: ChunkFn,
    names: Tuple[str, ...],
    rows: Optional[int] = None,
) -> Dict[str, Tensor]:
    """The sums ``objective`` returns over all chunks of ``h W^T + b``, by ``names``.

    ``h``: (N, d) features (any dtype), ``weight``: (V, d), ``bias``: (V,) or None.
    ``names[0]`` is the loss, the only entry with a gradient (to ``h``, ``weight`` and
    ``bias``, whichever require one; a weight shared with an input embedding gets the
    sum of both gradients). ``rows`` per chunk defaults to :func:`chunk_rows`. Under
    ``torch.no_grad()`` nothing but the sums is computed.
    """
    if not torch.is_grad_enabled():
        h, weight = h.detach(), weight.detach()
        bias = None if bias is None else bias.detach()
    cast = autocast_dtype(h.device.type)
    if cast is not None:  # as autocast would run the unfused output layer (--amp)
        h = h.to(cast)
    rows = rows or chunk_rows(weight.size(0))
    loss, stats = _FusedOutputLoss.apply(h, weight, bias, objective, rows, len(names))
    return {"loss": loss, **dict(zip(names[1:], stats.unbind(0)))}
