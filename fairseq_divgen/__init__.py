"""fairseq_divgen: TaiLr and LFD (learning from a degenerative model) for fairseq.

The package is also a valid ``--user-dir``. Importing it, whichever way comes
first (``import fairseq_divgen`` or ``--user-dir path/to/fairseq_divgen``),
registers its criterions and tasks once and lets torch's safe loader read fairseq
checkpoints.
"""
from .checkpoint_safety import allow_fairseq_checkpoint_globals

allow_fairseq_checkpoint_globals()

from . import criterions, tasks  # noqa: E402,F401  (registration side effects)

__version__ = "0.1.0"
