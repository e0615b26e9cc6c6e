"""The experiment's table (markdown + JSON) and its quality-vs-diversity plot (PNG)."""

import json
from pathlib import Path
from typing import Dict, Optional

COLUMNS = [
    ("ppl_oracle", "PPL_oracle ↓"),
    ("ppl_test", "PPL_test ↓"),
    ("bleu4", "BLEU-4 ↑"),
    ("self_bleu4", "self-BLEU-4 ↓"),
    ("distinct_2", "distinct-2 ↑"),
    ("seq_rep_4", "seq-rep-4 ↓"),
    ("mean_len", "mean length"),
]
LABELS = {
    "oracle": "oracle (its own fresh samples)",
    "mle": "MLE (label_smoothed_cross_entropy)",
    "tailr": "TaiLr (tailr)",
    "lfd": "LFD (lfd_poe)",
    "degenerative": "LFD stage 1 (truncated_ce)",
}


def markdown(rows: Dict[str, Dict[str, float]]) -> str:
    """The results as a markdown table, one row per model."""
    lines = [
        "| model | " + " | ".join(title for _, title in COLUMNS) + " |",
        "|---" * (len(COLUMNS) + 1) + "|",
    ]
    for name, r in rows.items():
        cells = [
            f"{r[key]:.2f}" if key != "distinct_2" and key != "seq_rep_4" else f"{r[key]:.3f}"
            for key, _ in COLUMNS
        ]
        lines.append(f"| {LABELS.get(name, name)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(rows: Dict[str, Dict[str, float]], path: Path) -> Optional[str]:
    """PPL_oracle (quality) against self-BLEU-4 (diversity); returns why not, if no plot."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import matplotlib.ticker
    except ImportError:
        return "matplotlib is not installed (pip install 'fairseq-divgen[plot]'); no plot"
    fig, ax = plt.subplots(figsize=(5.5, 4.2), dpi=120)
    for name, r in rows.items():
        ax.scatter(r["self_bleu4"], r["ppl_oracle"], s=40)
        ax.annotate(
            name, (r["self_bleu4"], r["ppl_oracle"]), textcoords="offset points", xytext=(5, 4)
        )
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax.yaxis.set_minor_formatter(matplotlib.ticker.ScalarFormatter())
    ax.set_xlabel("self-BLEU-4 of samples (lower = more diverse)")
    ax.set_ylabel("PPL_oracle of samples (log scale, lower = better)")
    ax.set_title("Synthetic oracle: quality vs diversity")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return None


def write_report(
    work: Path, rows: Dict[str, Dict[str, float]], oracle_stats: dict, header: str
) -> str:
    """Write results.md / results.json / results.png under ``work``; returns the markdown."""
    text = "\n".join(
        [
            header,
            "",
            f"Oracle: 1-layer LSTM, V={oracle_stats['vocab']}, entropy "
            f"{oracle_stats['entropy']:.2f} nats/token, mean sample length "
            f"{oracle_stats['sample_mean_length']:.1f}.",
            "",
            markdown(rows),
            "",
        ]
    )
    (work / "results.md").write_text(text)
    (work / "results.json").write_text(json.dumps({"oracle": oracle_stats, "rows": rows}, indent=1))
    why_not = plot(rows, work / "results.png")
    if why_not:
        text += f"\n({why_not})\n"
    return text
