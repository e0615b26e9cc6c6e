"""Let torch >= 2.6's ``weights_only`` loader read fairseq checkpoints.

torch 2.6 made ``torch.load(weights_only=True)`` the default; fairseq 0.12 checkpoints
pickle a few non-tensor objects, so ``fairseq-generate`` fails with
"Unsupported global: GLOBAL argparse.Namespace" (fairseq issue #5603). Instead of
turning the safety check off, allowlist exactly the types fairseq writes.
"""

import argparse
import collections
import typing

import torch


def _numpy_globals():
    """numpy objects pickled by meters of runs trained with ``--eval-bleu``."""
    import numpy

    out = [numpy.ndarray, numpy.dtype]
    dtypes = getattr(numpy, "dtypes", None)  # numpy >= 1.25
    if dtypes is not None and hasattr(dtypes, "Int64DType"):
        out.append(dtypes.Int64DType)
    try:  # numpy 2
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy 1
        from numpy.core.multiarray import _reconstruct
    # A checkpoint written under numpy 1 names numpy.core, one from numpy 2 names
    # numpy._core: accept both spellings for the same function.
    out.append((_reconstruct, "numpy.core.multiarray._reconstruct"))
    out.append((_reconstruct, "numpy._core.multiarray._reconstruct"))
    return out


def _omegaconf_globals():
    """OmegaConf containers pickled by checkpoints that stored a DictConfig."""
    from omegaconf import DictConfig, ListConfig, nodes
    from omegaconf.base import ContainerMetadata, Metadata

    return [DictConfig, ListConfig, ContainerMetadata, Metadata, nodes.AnyNode]


def fairseq_checkpoint_globals():
    """Every non-tensor global that fairseq 0.12 checkpoints are known to contain."""
    from fairseq.distributed.utils import _TensorPlaceholder

    return (
        [argparse.Namespace, collections.defaultdict, dict, list, int, typing.Any]
        + [_TensorPlaceholder]  # rank 0's state broadcast when resuming multi-GPU
        + _numpy_globals()
        + _omegaconf_globals()
    )


def allow_fairseq_checkpoint_globals() -> None:
    """Register the allowlist with torch (a no-op before torch 2.4)."""
    add = getattr(torch.serialization, "add_safe_globals", None)
    if add is not None:
        add(fairseq_checkpoint_globals())
