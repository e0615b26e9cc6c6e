"""fairseq_divgen: TaiLr and LFD (learning from a degenerative model) for fairseq.

The package is also a valid ``--user-dir``. Registering its criterions and tasks
with fairseq (and allowlisting fairseq's checkpoint types for torch's safe loader)
needs fairseq, and fairseq needs torch: seconds of imports that a text-metrics tool
such as ``divgen-score`` (``fairseq_divgen.scoring``) must not pay. So importing the
package registers nothing by itself; :func:`register` runs exactly once,

- at once, if fairseq is already imported: ``--user-dir`` (fairseq-train, -generate,
  -validate, -eval-lm, every spawned worker) and ``import fairseq_divgen`` after
  ``import fairseq``;
- otherwise as soon as fairseq's own import finishes in this process: a finder on
  ``sys.meta_path`` watches for the module ``fairseq`` and calls :func:`register`
  right after it has executed (it changes nothing in fairseq and removes itself).

Either way, ``import fairseq_divgen`` followed by any use of fairseq finds every
criterion and task registered, and ``import fairseq_divgen.scoring`` alone imports
neither torch nor fairseq.
"""

import importlib.abc
import sys

__version__ = "0.1.0"

_registered = False


def register() -> None:
    """Register the criterions and tasks with fairseq and allowlist fairseq's
    checkpoint types for ``torch.load`` (idempotent)."""
    global _registered
    if _registered:
        return
    _registered = True
    from .checkpoint_safety import allow_fairseq_checkpoint_globals

    allow_fairseq_checkpoint_globals()
    from . import criterions, tasks  # noqa: F401  (registration side effects)


class _Loader(importlib.abc.Loader):
    """Runs the real loader of a module, then a callback."""

    def __init__(self, loader, callback):
        self._loader = loader
        self._callback = callback

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        self._loader.exec_module(module)
        module.__loader__ = self._loader
        module.__spec__.loader = self._loader
        self._callback()

    def __getattr__(self, name):  # resource readers and the like
        return getattr(self._loader, name)


class _RegisterAfterFairseq(importlib.abc.MetaPathFinder):
    """Finds ``fairseq`` with the other finders and registers once it has executed."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "fairseq":
            return None
        sys.meta_path.remove(self)  # one shot; the finders below do the finding
        for finder in sys.meta_path:
            find = getattr(finder, "find_spec", None)
            spec = find(fullname, path, target) if find else None
            if spec is not None:
                if spec.loader is not None:
                    spec.loader = _Loader(spec.loader, register)
                return spec
        return None


if "fairseq" in sys.modules:
    register()
elif not any(isinstance(f, _RegisterAfterFairseq) for f in sys.meta_path):
    sys.meta_path.insert(0, _RegisterAfterFairseq())
