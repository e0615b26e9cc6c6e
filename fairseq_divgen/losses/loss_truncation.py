"""Loss truncation: leave out the whole sequences whose loss is above a quantile of
the recent sequence losses.

Kang and Hashimoto, "Improved Natural Language Generation via Loss Truncation",
ACL 2020. After a hot start of plain MLE, a sequence whose loss exceeds the
(1 - dropc) quantile of recently seen sequence losses is dropped from the update
(the paper's argument: those are the examples that make the log loss a poor proxy
for distinguishability, e.g. references with hallucinated content).

The sequence loss that is ranked is the mean NLL over the sequence's own (non-pad)
target tokens, as the authors' ``loss_dropper`` aggregates it ("by sequence", with
the mean), without the padding that their example's mean over the padded length
counts. The kept sequences contribute their token sums, as fairseq's cross-entropy
does. :class:`LossHistory` keeps the recent sequence losses and the cutoff, on the
device, without host synchronisation (docs/algorithms.md).
"""

import math
from typing import Callable, Dict, List, Optional, Tuple, Union

import torch
from torch import Tensor

from .chunked import (
    ChunkObjective,
    Source,
    accumulator_dtype,
    chunked_loss,
    source_dtype,
    source_shape,
)
from .chunking import chunk_rows
from .softmax import label_smoothed, softmax_rows


class SequenceTruncationObjective(ChunkObjective):
    """Over chunks of whole sequences (length ``T``): each sequence's mean NLL (written
    into ``sequence_nll``, NaN for a sequence without target tokens) against
    ``cutoff``, then fairseq's label-smoothed NLL of the kept sequences' tokens (of all,
    unless ``truncate``)."""

    names = ("loss", "nll", "kept_sequences", "kept_tokens")

    def __init__(self, target, cutoff, epsilon, pad, truncate, sequence_nll, accuracy=False):
        super().__init__(target, pad, accuracy)
        self.length = target.size(1)
        self.cutoff, self.eps, self.truncate = cutoff, epsilon, truncate
        self.sequence_nll = sequence_nll

    def chunk(self, z, t, real, rows, want_grad, out):
        length = self.length
        lse, q, nll, real = softmax_rows(z, t, real, want_grad, out, self.normalized)
        tokens = real.view(-1, length).sum(1)
        seq_nll = (nll.view(-1, length).sum(1) / tokens).masked_fill(tokens == 0, math.nan)
        self.sequence_nll[rows.start // length : rows.stop // length] = seq_nll
        keep_seq = seq_nll.le(self.cutoff) | (tokens == 0)
        keep = keep_seq.unsqueeze(1).expand(-1, length).reshape(-1, 1) & real
        used = keep if self.truncate else real
        loss, grad = label_smoothed(z, t, lse, q, nll, used, self.eps, want_grad)
        kept_tokens = tokens.masked_fill(~keep_seq, 0).sum()
        sums = [loss, nll.sum(), keep_seq.sum().to(z.dtype), kept_tokens.to(z.dtype)]
        return torch.stack(sums), grad


def loss_truncation_loss(
    source: Source,
    target: Tensor,
    cutoff: Union[float, Tensor],
    epsilon: float = 0.0,
    ignore_index: int = -100,
    truncate: bool = True,
    accuracy: bool = False,
    rows: Optional[int] = None,
) -> Dict[str, Tensor]:
    """Label-smoothed NLL (fairseq's ``eps_i = eps / (V - 1)``) of the sequences whose mean
    token NLL is at most ``cutoff``: ``loss``, ``nll`` (plain NLL of every token),
    ``sequence_nll`` (B,), ``kept_sequences`` and ``kept_tokens``.

    ``source``: B * T rows of ``target`` (B, T). ``cutoff`` +inf keeps everything
    (fairseq's ``label_smoothed_nll_loss``); with ``truncate`` False the loss runs over
    every sequence and only the counts follow the cutoff. Chunks hold whole sequences
    (``rows``, if given, must be a multiple of T).
    """
    batch, length = target.shape
    _, vocab = source_shape(source)
    device = target.device
    rows = rows or chunk_rows(device, vocab, multiple=length)
    if rows % length:
        raise ValueError(f"rows per chunk ({rows}) must be a multiple of the length {length}")
    acc = accumulator_dtype(source_dtype(source))
    seq_nll = torch.full((batch,), math.nan, dtype=acc, device=device)
    objective = SequenceTruncationObjective(
        target, cutoff, epsilon, ignore_index, truncate, seq_nll, accuracy
    )
    out = chunked_loss(source, objective, rows)
    out["kept_sequences"] = out["kept_sequences"].long()
    out["kept_tokens"] = out["kept_tokens"].long()
    out["sequence_nll"] = seq_nll
    return out


def linear_quantile(values: Tensor, count: Tensor, q: float) -> Tensor:
    """The ``q`` quantile (numpy's default "linear" interpolation) of the first
    ``count`` entries of ``values`` (1-D; ``count`` a 0-dim tensor >= 1), in float64,
    computed on the device without reading ``count`` on the host."""
    n = values.numel()
    slot = torch.arange(n, device=values.device)
    ranked = torch.sort(values.double().masked_fill(slot >= count, math.inf)).values
    last = (count - 1).clamp(min=0)
    pos = last.double() * q
    lo = pos.floor().long()
    hi = torch.minimum(lo + 1, last)
    low, high = ranked.gather(0, lo.view(1)), ranked.gather(0, hi.view(1))
    return (low + (high - low) * (pos - lo.double())).squeeze(0)


class LossHistory:
    """The recent sequence losses and the cutoff they give (loss_dropper's
    ``LossDropper(dropc, min_count, recompute)`` semantics, per optimizer update).

    - ``begin(step)`` at the start of each forward of update ``step``: when ``step``
      is new, the sequence losses recorded during the previous update enter the
      history (so an update never sees its own losses, and every micro-batch of an
      update sees the same cutoff);
    - a recorded batch may carry a flag (a 0-dim bool tensor) that says whether its
      update really used it: an unset flag turns its losses into padding when they
      enter (fairseq's dummy batches, a forward whose backward ran out of memory);
    - ``gather``, if given, turns the update's recorded batches (a list of 1-D tensors)
      into the losses that enter, e.g. those of every data-parallel worker;
    - the history is a ring buffer of the last ``recompute`` losses;
    - the cutoff is +inf (plain MLE) until ``min_count`` losses have entered; then it
      is the (1 - dropc) quantile of the buffer, recomputed whenever ``recompute``
      new losses have entered since it was last computed. dropc = 0 never truncates.

    Everything lives on the losses' device; nothing is read back to the host. NaN
    entries are padding and never enter.
    """

    def __init__(
        self,
        dropc: float,
        min_count: int,
        recompute: int,
        gather: Optional[Callable[[List[Tensor]], Tensor]] = None,
    ):
        self.dropc, self.min_count, self.capacity = dropc, min_count, recompute
        self.gather = gather
        self.step: Optional[int] = None  # the update whose losses are pending
        self.pending: List[Tuple[Tensor, Optional[Tensor]]] = []
        self.values: Optional[Tensor] = None  # capacity + 1 slots; the last one is scratch
        self.total = self.since = self.cutoff_value = None

    def _ensure(self, device) -> None:
        if self.values is None:
            self.values = torch.zeros(self.capacity + 1, dtype=torch.float32, device=device)
            self.total = torch.zeros((), dtype=torch.long, device=device)
            self.since = torch.zeros((), dtype=torch.long, device=device)
            self.cutoff_value = torch.full((), math.inf, dtype=torch.float64, device=device)

    @property
    def cutoff(self) -> Union[float, Tensor]:
        """The cutoff in force: a 0-dim tensor once the history exists, else +inf."""
        return math.inf if self.cutoff_value is None else self.cutoff_value

    def cutoff_on(self, device) -> Tensor:
        """The cutoff in force as a 0-dim float64 tensor on ``device`` (+inf made there
        before the history exists: no copy from the host)."""
        if self.cutoff_value is not None:
            return self.cutoff_value.to(device)
        return torch.full((), math.inf, dtype=torch.float64, device=device)

    @property
    def started(self) -> bool:
        """Whether any loss has been recorded (host-side bookkeeping only)."""
        return self.step is not None

    def begin(self, step: int) -> None:
        """Start (or continue) update ``step``; a new step commits the pending losses."""
        if step != self.step:
            if self.step is not None:
                self.commit()
            self.step = step

    def add(self, losses: Tensor, used: Optional[Tensor] = None) -> None:
        """Record sequence losses of the current update (1-D; NaN entries are padding);
        ``used``: a 0-dim bool tensor, set later when the update used this batch."""
        self._ensure(losses.device)
        self.pending.append((losses.detach().float(), used))

    def commit(self) -> None:
        """Move the pending losses into the ring buffer (in order) and recompute the
        cutoff if it is due."""
        if not self.pending and self.gather is None:
            return
        batches = [x if u is None else torch.where(u, x, math.nan) for x, u in self.pending]
        self.pending = []
        # with a gather, every worker takes part in every commit, even with nothing to add
        new = self.gather(batches) if self.gather is not None else torch.cat(batches)
        if new.numel() == 0:
            return
        self._ensure(new.device)
        cap = self.capacity
        valid = ~torch.isnan(new)
        rank = torch.cumsum(valid, 0) - 1  # order among the valid entries
        n = valid.sum()
        # only the last `cap` valid entries can survive: no two writes hit one slot
        write = valid & (rank >= n - cap)
        slot = torch.where(write, (self.total + rank) % cap, torch.full_like(rank, cap))
        self.values.scatter_(0, slot, new.masked_fill(~write, 0.0))
        self.total += n
        self.since += n
        if self.dropc == 0.0:
            return
        enough = self.total >= max(self.min_count, 1)
        due = enough & ((self.since >= cap) | torch.isinf(self.cutoff_value))
        fresh = linear_quantile(
            self.values[:cap], torch.clamp(self.total, max=cap), 1.0 - self.dropc
        )
        self.cutoff_value = torch.where(due, fresh, self.cutoff_value)
        self.since = torch.where(due, torch.zeros_like(self.since), self.since)

    def to(self, device) -> "LossHistory":
        """Move the state to ``device`` (a restored history is on the CPU until used)."""
        if self.values is not None and self.values.device != torch.device(device):
            self.values = self.values.to(device)
            self.total, self.since = self.total.to(device), self.since.to(device)
            self.cutoff_value = self.cutoff_value.to(device)
            self.pending = [
                (x.to(device), None if u is None else u.to(device)) for x, u in self.pending
            ]
        return self


class _MarkUsed(torch.autograd.Function):
    """The loss, unchanged; once a backward through it has completed with a non-zero
    incoming gradient, ``used`` is set. fairseq multiplies a dummy batch's loss by 0
    (``ignore_grad``) and abandons a backward that runs out of memory: neither sets it."""

    @staticmethod
    def forward(ctx, loss, used):
        ctx.used = used
        return loss.clone()

    @staticmethod
    def backward(ctx, grad):
        used, nonzero = ctx.used, grad.ne(0).all()
        # runs when the whole backward pass has finished (not after an error)
        torch.autograd.Variable._execution_engine.queue_callback(lambda: used.copy_(nonzero))
        return grad, None


def mark_used(loss: Tensor) -> Tuple[Tensor, Tensor]:
    """``(loss, used)``: the loss (same value) and a 0-dim bool tensor, False until a
    backward through that loss completes with a non-zero incoming gradient."""
    used = torch.zeros((), dtype=torch.bool, device=loss.device)
    return _MarkUsed.apply(loss, used), used
