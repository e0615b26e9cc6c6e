"""Sizes of the synthetic-oracle experiment and the flags of each trained method."""

from dataclasses import dataclass, field, replace
from typing import Dict, List

from .oracle import OracleSpec


@dataclass
class Size:
    """Everything that scales: oracle, data, model, training budget, samples."""

    oracle: OracleSpec
    n_train: int
    n_valid: int
    n_test: int
    embed_dim: int
    hidden: int
    max_update: int
    degenerative_max_update: int
    max_tokens: int
    lr: float
    warmup_updates: int
    n_samples: int
    bleu_max_hyps: int
    self_bleu_max_hyps: int
    dropout: float = 0.0
    seed: int = 1


SIZES: Dict[str, Size] = {
    # seconds: the end-to-end check CI runs
    "tiny": Size(
        oracle=OracleSpec(
            vocab=60, embed_dim=8, hidden=8, max_len=12, mean_length=6.0, target_entropy=2.5
        ),
        n_train=300,
        n_valid=50,
        n_test=50,
        embed_dim=16,
        hidden=16,
        max_update=12,
        degenerative_max_update=8,
        max_tokens=500,
        lr=0.01,
        warmup_updates=4,
        n_samples=40,
        bleu_max_hyps=40,
        self_bleu_max_hyps=40,
    ),
    # the default: minutes on a 2-core CPU
    "default": Size(
        oracle=OracleSpec(),
        n_train=10000,
        n_valid=500,
        n_test=1000,
        embed_dim=32,
        hidden=64,
        max_update=600,
        degenerative_max_update=300,
        max_tokens=4000,
        lr=0.01,
        warmup_updates=50,
        n_samples=1000,
        bleu_max_hyps=500,
        self_bleu_max_hyps=300,
    ),
    # for a GPU machine (or patience): more data, a bigger model, a longer budget
    "large": Size(
        oracle=replace(OracleSpec(), vocab=5000, embed_dim=64, hidden=64),
        n_train=100000,
        n_valid=2000,
        n_test=2000,
        embed_dim=64,
        hidden=256,
        max_update=6000,
        degenerative_max_update=2000,
        max_tokens=8000,
        lr=0.003,
        warmup_updates=200,
        n_samples=2000,
        bleu_max_hyps=1000,
        self_bleu_max_hyps=500,
    ),
}


@dataclass
class Methods:
    """Criterion settings of the compared methods (the defaults the README reports).

    TaiLr: the authors' IWSLT14 setting. LFD: ``lfd_poe``'s defaults (beta 1, lambda 3,
    EOS outside the product; docs/lfd.md).
    """

    label_smoothing: float = 0.0
    tailr_gamma: float = 0.1
    tailr_min_weight: float = 0.3
    truncation_ratio: float = 0.5
    degenerative_scale: float = 1.0
    mle_weight: float = 3.0
    # The baselines (the sweep's rows; docs/baselines.md): the papers' or authors' defaults
    unlikelihood_alpha: float = 1.0  # --rank-alpha
    loss_truncation_dropc: float = 0.4  # LossDropper(dropc=0.4, min_count=10000, recompute=10000)
    loss_truncation_min_count: int = 10000
    loss_truncation_recompute: int = 10000
    mixce_eta: float = 0.5  # --mixing-ratio, the default of the authors' run.py
    ent_threshold: float = 1.3  # --token-prune-threshold: no published default, ours
    ent_start: int = 0  # --start-prune-iteration
    extra: Dict[str, List[str]] = field(default_factory=dict)

    def criterion_flags(self) -> Dict[str, List[str]]:
        """method name -> fairseq-train flags (task and criterion) of that method."""
        ls = ["--label-smoothing", self.label_smoothing]
        return {
            "mle": ["--criterion", "label_smoothed_cross_entropy", *ls],
            "tailr": [
                "--criterion",
                "tailr",
                *ls,
                "--density-ratio-threshold",
                self.tailr_gamma,
                "--density-min-weight",
                self.tailr_min_weight,
            ],
            "degenerative": [
                "--criterion",
                "truncated_ce",
                "--truncation-ratio",
                self.truncation_ratio,
            ],
            "lfd": [
                "--task",
                "language_modeling_lfd",
                "--criterion",
                "lfd_poe",
                *ls,
                "--degenerative-scale",
                self.degenerative_scale,
                "--mle-weight",
                self.mle_weight,
            ],
            "unlikelihood": [
                "--criterion",
                "unlikelihood",
                "--rank-alpha",
                self.unlikelihood_alpha,
            ],
            "loss_truncation": [
                "--criterion",
                "loss_truncation",
                *ls,
                "--dropc",
                self.loss_truncation_dropc,
                "--min-count",
                self.loss_truncation_min_count,
                "--recompute",
                self.loss_truncation_recompute,
            ],
            "mixce": ["--criterion", "mixce", "--mixing-ratio", self.mixce_eta],
            "error_norm_truncation": [
                "--criterion",
                "error_norm_truncation",
                *ls,
                "--token-prune-threshold",
                self.ent_threshold,
                "--start-prune-iteration",
                self.ent_start,
            ],
        }
