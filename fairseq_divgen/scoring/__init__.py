"""Quality and diversity metrics for generated text, and the ``divgen-score`` command."""

from .metrics import (
    bleu_and_self_bleu,
    corpus_bleu,
    distinct_and_seq_rep,
    distinct_n,
    length_stats,
    reference_set_bleu,
    rep_wrep,
    self_bleu,
    seq_rep_n,
    uniq,
)

__all__ = [
    "bleu_and_self_bleu",
    "corpus_bleu",
    "distinct_and_seq_rep",
    "distinct_n",
    "length_stats",
    "reference_set_bleu",
    "rep_wrep",
    "self_bleu",
    "seq_rep_n",
    "uniq",
]
