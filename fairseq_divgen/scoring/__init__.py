"""Quality and diversity metrics for generated text, and the ``divgen-score`` command."""
from .metrics import (
    corpus_bleu,
    distinct_n,
    length_stats,
    reference_set_bleu,
    rep_wrep,
    self_bleu,
    seq_rep_n,
    uniq,
)

__all__ = [
    "corpus_bleu",
    "distinct_n",
    "length_stats",
    "reference_set_bleu",
    "rep_wrep",
    "self_bleu",
    "seq_rep_n",
    "uniq",
]
