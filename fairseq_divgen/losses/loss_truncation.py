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
device, without host synchronisation.
"""
import math
from typing import List, NamedTuple, Optional, Union

import torch
from torch import Tensor


class LossTruncationLoss(NamedTuple):
    """Sums over non-pad tokens (and counts) of a batch."""

    loss: Tensor  # label-smoothed NLL of the kept sequences' tokens (all, with truncate=False)
    nll: Tensor  # plain NLL of every token
    sequence_nll: Tensor  # (B,) mean NLL of each sequence (detached; NaN if it has no token)
    kept_sequences: Tensor  # sequences whose loss is at most the cutoff
    kept_tokens: Tensor  # their non-pad tokens


def loss_truncation_loss(
    lprobs: Tensor,
    target: Tensor,
    cutoff: Union[float, Tensor],
    epsilon: float = 0.0,
    ignore_index: int = -100,
    truncate: bool = True,
) -> LossTruncationLoss:
    """Label-smoothed NLL (fairseq's ``eps_i = eps / (V - 1)`` convention) of the
    sequences whose mean token NLL is at most ``cutoff``.

    ``lprobs``: (B * T, V) log-probabilities of ``target``: (B, T). ``cutoff`` +inf
    keeps everything (fairseq's ``label_smoothed_nll_loss``); with ``truncate`` False
    the loss runs over every sequence and only the counts follow the cutoff.
    """
    batch, length = target.shape
    flat = target.reshape(-1, 1)
    pad = flat.eq(ignore_index)
    acc = torch.promote_types(lprobs.dtype, torch.float32)
    nll = -lprobs.gather(dim=-1, index=flat).to(acc)
    nll.masked_fill_(pad, 0.0)
    with torch.no_grad():
        tokens = (~pad).view(batch, length).sum(1)
        # NaN for a sequence without target tokens (e.g. all of it an ignored prefix):
        # it has nothing to rank, and LossHistory skips NaN entries.
        seq_nll = (nll.detach().view(batch, length).sum(1) / tokens).masked_fill(tokens == 0, math.nan)
        keep_seq = seq_nll.le(cutoff) | (tokens == 0)
        keep = keep_seq.unsqueeze(1).expand(batch, length).reshape(-1, 1) & ~pad
    drop = ~keep if truncate else pad
    loss = nll.masked_fill(drop, 0.0).sum()
    if epsilon > 0.0:
        eps_i = epsilon / (lprobs.size(-1) - 1)
        smooth = (-lprobs.sum(dim=-1, keepdim=True, dtype=acc)).masked_fill(drop, 0.0).sum()
        loss = (1.0 - epsilon - eps_i) * loss + eps_i * smooth
    return LossTruncationLoss(
        loss, nll.detach().sum(), seq_nll, keep_seq.sum(), tokens.masked_fill(~keep_seq, 0).sum()
    )


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
    - the history is a ring buffer of the last ``recompute`` losses;
    - the cutoff is +inf (plain MLE) until ``min_count`` losses have entered; then it
      is the (1 - dropc) quantile of the buffer, recomputed whenever ``recompute``
      new losses have entered since it was last computed. dropc = 0 never truncates.

    Everything lives on the losses' device; nothing is read back to the host.
    """

    def __init__(self, dropc: float, min_count: int, recompute: int):
        self.dropc, self.min_count, self.capacity = dropc, min_count, recompute
        self.step: Optional[int] = None  # the update whose losses are pending
        self.pending: List[Tensor] = []
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

    @property
    def started(self) -> bool:
        """Whether any loss has been recorded (host-side bookkeeping only)."""
        return self.step is not None

    def begin(self, step: int) -> None:
        """Start (or continue) update ``step``; a new step commits the pending losses."""
        if step != self.step:
            self.commit()
            self.step = step

    def add(self, losses: Tensor) -> None:
        """Record sequence losses of the current update (1-D; NaN entries are padding)."""
        self._ensure(losses.device)
        self.pending.append(losses.detach().float())

    def commit(self) -> None:
        """Move the pending losses into the ring buffer (in order) and recompute the
        cutoff if it is due."""
        if not self.pending:
            return
        new = torch.cat(self.pending)
        self.pending = []
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
        fresh = linear_quantile(self.values[:cap], torch.clamp(self.total, max=cap), 1.0 - self.dropc)
        self.cutoff_value = torch.where(due, fresh, self.cutoff_value)
        self.since = torch.where(due, torch.zeros_like(self.since), self.since)

    def to(self, device) -> "LossHistory":
        """Move the state to ``device`` (a restored history is on the CPU until used)."""
        if self.values is not None and self.values.device != torch.device(device):
            self.values = self.values.to(device)
            self.total, self.since = self.total.to(device), self.since.to(device)
            self.cutoff_value = self.cutoff_value.to(device)
            self.pending = [p.to(device) for p in self.pending]
        return self
