"""This package's objectives for Hugging Face transformers' ``Trainer``
(``pip install fairseq-divgen[hf]``; docs/transformers.md).

Each objective is a ``compute_loss_func`` with the flags and defaults of its fairseq
criterion: TaiLr (Ji et al., ICLR 2023), LFD's two stages (Hong et al., arXiv
2309.12619), token-level unlikelihood (Welleck et al., ICLR 2020), loss truncation (Kang
and Hashimoto, ACL 2020), MixCE (Zhang et al., ACL 2023) and error norm truncation (Li et
al., ICLR 2024). The math is ``fairseq_divgen.losses`` (pure torch); nothing here imports
fairseq, and neither the fairseq plugin nor ``divgen-score`` imports this subpackage.

    loss = TailrLoss(density_ratio_threshold=0.1, density_min_weight=0.3)
    Trainer(model, args, compute_loss_func=loss, callbacks=[loss], ...)
    DivgenTrainer(model, args, loss=loss, fused_output=True, ...)
    DivgenTrainer(model, args, loss=LfdPoeLoss(), degenerative_model="stage1/", ...)
"""

try:
    import transformers  # noqa: F401
except ImportError as error:  # pragma: no cover - depends on the environment
    raise ImportError(
        "fairseq_divgen.hf needs transformers and accelerate: pip install fairseq-divgen[hf]"
    ) from error

from .base import DivgenLoss
from .objectives import (
    ErrorNormTruncationLoss,
    LfdPoeLoss,
    LossTruncationLoss,
    MixceLoss,
    TailrLoss,
    TruncatedCELoss,
    UnlikelihoodLoss,
)
from .trainer import DivgenTrainer

LOSSES = {
    cls.criterion: cls
    for cls in (
        TailrLoss,
        TruncatedCELoss,
        LfdPoeLoss,
        UnlikelihoodLoss,
        LossTruncationLoss,
        MixceLoss,
        ErrorNormTruncationLoss,
    )
}  # by fairseq criterion name

__all__ = [
    "LOSSES",
    "DivgenLoss",
    "DivgenTrainer",
    "ErrorNormTruncationLoss",
    "LfdPoeLoss",
    "LossTruncationLoss",
    "MixceLoss",
    "TailrLoss",
    "TruncatedCELoss",
    "UnlikelihoodLoss",
]
