"""fairseq_divgen: TaiLr, LFD and their baselines for fairseq, and text metrics.

The package is a fairseq ``--user-dir``, and its parts are independent of each other:
``losses`` (pure torch), ``criterions`` and ``tasks`` (fairseq), ``scoring``
(``divgen-score``: neither torch nor fairseq), ``hf`` (Hugging Face transformers).
Registering the criterions and tasks with fairseq (and allowlisting fairseq's checkpoint
types for torch's safe loader) needs fairseq, whose import takes seconds that
``divgen-score`` must not pay. So the choice is the simplest one that keeps both:
importing this package registers everything when fairseq is already imported, and
nothing otherwise.

- ``fairseq-train --user-dir`` (and -generate, -validate, -eval-lm, every spawned
  worker) imports fairseq first, then this package: registered.
- In your own code: ``import fairseq`` before ``import fairseq_divgen``, or call
  :func:`register` (importing ``fairseq_divgen.criterions`` or ``.tasks`` registers too).
- ``import fairseq_divgen.scoring`` imports neither torch nor fairseq.
"""

import sys

__version__ = "0.1.0"

_registered = False


def register() -> None:
    """Register the criterions and tasks with fairseq and allowlist fairseq's checkpoint
    types for ``torch.load`` (idempotent; imports fairseq)."""
    global _registered
    if _registered:
        return
    _registered = True
    from .checkpoint_safety import allow_fairseq_checkpoint_globals

    allow_fairseq_checkpoint_globals()
    from . import criterions, tasks  # noqa: F401  (registration side effects)


if "fairseq" in sys.modules:
    register()
