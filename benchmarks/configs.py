"""What the benchmark trains: model presets and the criterions' flags."""


def transformer(layers: int, dim: int, ffn: int, heads: int, arch: str = "transformer") -> list:
    """Flags of a transformer with ``layers`` encoder and decoder layers of width ``dim``."""
    flags = ["--arch", arch]
    for side in ("encoder", "decoder"):
        flags += [
            f"--{side}-layers",
            str(layers),
            f"--{side}-embed-dim",
            str(dim),
            f"--{side}-ffn-embed-dim",
            str(ffn),
            f"--{side}-attention-heads",
            str(heads),
        ]
    return flags


# Each preset: (main model flags, quarter-size degenerative model flags). The
# quarter-size model halves the width (embedding and FFN / hidden sizes) and, for
# the transformers, the depth, which is about a quarter of the main model's
# parameters (the JSON records the exact counts).
ARCHS = {
    "tiny": (transformer(1, 32, 64, 2), transformer(1, 16, 32, 2)),
    "small": (transformer(2, 256, 1024, 4), transformer(1, 128, 512, 4)),
    # transformer_iwslt_de_en: 6 + 6 layers, 512, FFN 1024, 4 heads
    "iwslt": (
        ["--arch", "transformer_iwslt_de_en"],
        transformer(3, 256, 512, 4, "transformer_iwslt_de_en"),
    ),
    # transformer (base): 6 + 6 layers, 512, FFN 2048, 8 heads
    "base": (["--arch", "transformer"], transformer(3, 256, 1024, 4)),
    # lstm: 1-layer encoder and decoder, 512, attention
    "lstm": (
        ["--arch", "lstm"],
        [
            "--arch",
            "lstm",
            "--encoder-embed-dim",
            "256",
            "--decoder-embed-dim",
            "256",
            "--decoder-out-embed-dim",
            "256",
        ],
    ),
}

COMMON = ["--share-all-embeddings"]

LS = ["--label-smoothing", "0.1"]
TAILR_IWSLT14 = LS + ["--density-ratio-threshold", "0.1", "--density-min-weight", "0.3"]
BASELINE = "label_smoothed_cross_entropy"

# row name -> (criterion, its flags, degenerative model size or None)
ROWS = {
    "cross_entropy": ("cross_entropy", [], None),
    BASELINE: (BASELINE, LS, None),
    "tailr": ("tailr", TAILR_IWSLT14, None),
    "truncated_ce": ("truncated_ce", ["--truncation-ratio", "0.5"], None),
    "lfd_poe (equal-size degenerative)": ("lfd_poe", LS, "equal"),
    "lfd_poe (quarter-size degenerative)": ("lfd_poe", LS, "quarter"),
    # the baselines, each in the regime that does the extra work: loss_truncation and
    # error_norm_truncation truncate from the second update (no hot start / warm-up)
    "unlikelihood": ("unlikelihood", ["--rank-alpha", "1.0"], None),
    "loss_truncation": ("loss_truncation", LS + ["--dropc", "0.4", "--min-count", "0"], None),
    "mixce": ("mixce", ["--mixing-ratio", "0.5"], None),
    "error_norm_truncation": (
        "error_norm_truncation",
        LS + ["--token-prune-threshold", "1.3"],
        None,
    ),
    "tailr_naive_reference (benchmark only)": ("tailr_naive_reference", TAILR_IWSLT14, None),
}


def fused_row(name: str) -> str:
    """The row name of ``name`` with --fused-output: "tailr (fused)",
    "lfd_poe (equal-size degenerative, fused)"."""
    return f"{name[:-1]}, fused)" if name.endswith(")") else f"{name} (fused)"


# Every criterion of the plugin again with --fused-output (projection and loss chunk by chunk).
ROWS.update(
    {
        fused_row(name): (criterion, flags + ["--fused-output"], size)
        for name, (criterion, flags, size) in list(ROWS.items())
        if criterion not in ("cross_entropy", BASELINE, "tailr_naive_reference")
    }
)

OPTIMIZER = [
    "--optimizer",
    "adam",
    "--adam-betas",
    "(0.9, 0.98)",
    "--lr",
    "0.0005",
    "--lr-scheduler",
    "inverse_sqrt",
    "--warmup-updates",
    "4000",
]


def degenerative_arch(arch: str, size: str) -> list:
    """Flags of the degenerative model: the main model's (``equal``) or the quarter one."""
    main, quarter = ARCHS[arch]
    return (main if size == "equal" else quarter) + COMMON


def main_arch(arch: str) -> list:
    """Flags of the main model."""
    return ARCHS[arch][0] + COMMON
