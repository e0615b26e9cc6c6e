"""Whether a frozen model's outputs stayed finite, read back without making the host wait.

Each step records a 0-dim bool tensor on the device (``FrozenLogits.finite``). The flags
of all steps since the last read are combined on the device, so a step whose result was
not yet read (several micro-batches per update) is never lost. On the CPU the combined
flag is read at once; on a GPU through a pinned host copy and an event, as soon as the
device has finished it (fairseq's and accelerate's own per-step synchronisation have
completed it by the next step), never with a blocking read.
"""

from typing import Optional

import torch


class FiniteWatch:
    """Records per-step finiteness flags; :meth:`failed` says whether any was False."""

    def __init__(self):
        self._flag: Optional[torch.Tensor] = None  # every flag since the last read, and-ed
        self._dtype: Optional[torch.dtype] = None
        self._host: Optional[torch.Tensor] = None
        self._event = None

    def record(self, ok: torch.Tensor, dtype: torch.dtype) -> None:
        """Record ``ok``, a 0-dim bool tensor (no host sync), for outputs in ``dtype``."""
        self._flag = ok if self._flag is None else self._flag & ok
        self._dtype = dtype
        if ok.device.type == "cuda":
            host = torch.empty((), dtype=torch.bool, pin_memory=True)
            host.copy_(self._flag, non_blocking=True)
            event = torch.cuda.Event()
            event.record()
            self._host, self._event = host, event

    def failed(self) -> Optional[torch.dtype]:
        """The dtype of the recorded outputs if any of them was not finite, else None
        (also while the device has not finished them: they are read at a later call)."""
        if self._flag is None:
            return None
        if self._event is not None:
            if not self._event.query():
                return None
            ok = bool(self._host)  # the event is done: no wait
        else:
            ok = bool(self._flag)  # the CPU: computed already
        dtype = self._dtype
        self._flag = self._dtype = self._host = self._event = None
        return None if ok else dtype
