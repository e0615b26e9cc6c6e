"""Metric definitions (ALGORITHMS.md section 5).

The BLEU metrics tokenize with sacrebleu's tokenizer (``tokenize``: 13a by default,
``none`` for text that is already tokenized); the others split on whitespace.

- corpus BLEU: sacrebleu's corpus BLEU of the hypotheses against one reference each.
- self-BLEU (Zhu et al., Texygen 2018): mean over hypotheses i of sacrebleu's
  sentence BLEU of hypothesis i with every *other* hypothesis as a reference.
  Every hypothesis is scored by default; with ``max_hyps`` N (``--self-bleu-max``),
  a seeded random subset of N hypotheses is drawn and scored within itself, as
  this package did by default before (N = 500). A subset's value is a noisy
  estimate of a different number: it is not comparable with the full set's.
  0.0 for fewer than 2 hypotheses. Higher means less diverse.
- reference-set BLEU (Texygen's BLEU, used for samples of a language model): mean
  over hypotheses of sacrebleu's sentence BLEU with the *whole* reference set as
  the references of every hypothesis (every hypothesis by default; a seeded subset
  of ``max_hyps`` as for self-BLEU).
- distinct-n (Li et al., 2016): unique n-grams of the corpus / total n-grams.
- seq-rep-n (Welleck et al., 2020): per sequence, 1 - unique n-grams / total
  n-grams; averaged over the sequences that have at least one n-gram.
- rep/l (Welleck et al., 2020): fraction of tokens x_t that also occur among the
  previous l tokens x_{t-l}..x_{t-1} of the same sequence.
- wrep/l: the same repeats, counted only where x_t differs from the reference
  token at position t (or the reference has ended): "wrong" repeats. Needs references.
- uniq: number of distinct tokens over all hypotheses.

How the BLEU metrics are computed. Each gives exactly what sacrebleu's
``sentence_score`` / ``corpus_score`` give (sacrebleu's tokenizer, n-gram orders
1..4, ``exp`` smoothing, ``effective_order`` for sentence BLEU, the closest
reference length with ties to the shorter), and sacrebleu's own
``BLEU.compute_bleu`` turns the counts into the score; but each text is tokenized
and its n-grams counted once, and the clipped counts come from set operations:

- The n-grams of a text, with their counts, become a set of *occurrence labels*:
  the k-th occurrence of n-gram g is labelled g for k = 1 and (g, k) for k > 1.
  Then |labels(A) & labels(B)| = sum over g of min(count_A(g), count_B(g)), the
  clipped count of A against B, and the union of the labels of several references
  is the labels of their per-n-gram maximum count, which is how sacrebleu clips
  against several references.
- Self-BLEU: hypothesis i's references are all the other hypotheses (duplicates of
  its text at other indices included), so its clipped count is the number of its
  labels that some other hypothesis also has: |labels(i) & shared|, where
  ``shared`` is the set of labels found in at least two hypotheses. This is the
  "largest count among the others" rule: if i alone holds an n-gram's largest
  count, the others' largest is the second largest. The reference length is the
  length closest to i's among the others' lengths, from one sorted list (i's own
  length left out once).
- Reference-set BLEU: |labels(i) & union of the labels of all references|, and the
  closest length in the sorted reference lengths.

The cost is linear in the total number of tokens; calling sacrebleu's
``sentence_score`` once per hypothesis with all the others as references extracts
every hypothesis's n-grams once per other hypothesis: a cost that grows with the
square of their number.
"""
import gc
import logging
import random
import statistics
from bisect import bisect_left, bisect_right
from collections import Counter
from contextlib import contextmanager
from itertools import chain, repeat
from operator import add, mul
from typing import Dict, Iterator, List, Optional, Sequence, Set, Tuple


def ngrams(tokens: Sequence[str], n: int) -> List[tuple]:
    """The n-grams (n >= 1) of one token sequence, in order."""
    return list(zip(*(tokens[i:] for i in range(n))))


def distinct_n(hyps: Sequence[Sequence[str]], n: int) -> float:
    """Corpus distinct-n: unique n-grams / total n-grams (0 if there are none)."""
    return distinct_and_seq_rep(hyps, n)[0][n - 1]


def seq_rep_n(hyps: Sequence[Sequence[str]], n: int) -> float:
    """Mean over sequences with >= 1 n-gram of 1 - unique n-grams / n-grams."""
    return distinct_and_seq_rep(hyps, n)[1][n - 1]


def distinct_and_seq_rep(
    hyps: Sequence[Sequence[str]], max_order: int = 4
) -> Tuple[List[float], List[float]]:
    """``[distinct_n(hyps, n) for n in 1..max_order]`` and the same for seq_rep_n, in
    one pass (the n-grams as integer codes, see ``_ngram_codes``)."""
    distinct, seq_rep = [], []
    with _gc_paused():
        for codes in _ngram_codes(hyps, max_order):
            total = sum(map(len, codes))
            distinct.append(len(set(chain.from_iterable(codes))) / total if total else 0.0)
            values = [1.0 - len(set(c)) / len(c) for c in codes if c]
            seq_rep.append(sum(values) / len(values) if values else 0.0)
    return distinct, seq_rep


def rep_wrep(
    hyps: Sequence[Sequence[str]],
    window: int,
    refs: Optional[Sequence[Sequence[str]]] = None,
) -> Dict[str, Optional[float]]:
    """rep/window and (with references) wrep/window, as fractions of all tokens."""
    total = reps = wreps = 0
    for i, h in enumerate(hyps):
        ref = refs[i] if refs is not None else None
        for t, tok in enumerate(h):
            total += 1
            if tok in h[max(0, t - window) : t]:
                reps += 1
                if ref is not None and (t >= len(ref) or ref[t] != tok):
                    wreps += 1
    if total == 0:
        return {"rep": 0.0, "wrep": 0.0 if refs is not None else None}
    return {"rep": reps / total, "wrep": wreps / total if refs is not None else None}


def uniq(hyps: Sequence[Sequence[str]]) -> int:
    """Number of distinct tokens generated."""
    return len({tok for h in hyps for tok in h})


def length_stats(hyps: Sequence[Sequence[str]]) -> Dict[str, float]:
    """Mean and median hypothesis length in tokens."""
    lengths = [len(h) for h in hyps] or [0]
    return {"mean_len": statistics.mean(lengths), "median_len": statistics.median(lengths)}


def corpus_bleu(hyps: Sequence[str], refs: Sequence[str], tokenize: str = "13a") -> float:
    """sacrebleu corpus BLEU (one reference per hypothesis)."""
    return bleu_and_self_bleu(hyps, refs, tokenize=tokenize, with_self_bleu=False)["bleu"]


def self_bleu(
    hyps: Sequence[str], max_hyps: Optional[int] = None, seed: int = 0, tokenize: str = "13a"
) -> float:
    """Mean sentence BLEU of each hypothesis against all the others (sacrebleu's
    ``sentence_score``, in one pass). ``max_hyps``: score only a subset of that many
    hypotheses, drawn with ``seed`` (default: every hypothesis)."""
    return bleu_and_self_bleu(hyps, None, max_hyps, seed, tokenize)["self_bleu"]


def bleu_and_self_bleu(
    hyps: Sequence[str],
    refs: Optional[Sequence[str]] = None,
    self_bleu_max: Optional[int] = None,
    seed: int = 0,
    tokenize: str = "13a",
    with_self_bleu: bool = True,
) -> Dict[str, Optional[float]]:
    """``{"bleu": corpus_bleu(hyps, refs, tokenize), "self_bleu": self_bleu(hyps,
    self_bleu_max, seed, tokenize)}``, tokenizing and counting the hypotheses once for
    both. ``bleu`` is None without references, ``self_bleu`` without ``with_self_bleu``."""
    hyps = list(hyps)
    if refs is not None and len(refs) != len(hyps):
        raise ValueError(f"{len(hyps)} hypotheses but {len(refs)} references")
    scored = list(range(len(hyps))) if with_self_bleu else []  # the hypotheses self-BLEU scores
    if self_bleu_max is not None and len(scored) > self_bleu_max:
        # The positions that random.Random(seed).sample(hyps, self_bleu_max) picks
        # (sample() draws positions whatever the population holds).
        scored = random.Random(seed).sample(scored, self_bleu_max)
    if len(scored) < 2:
        scored = []
    if refs is None and len(scored) < len(hyps):  # nothing else needs the others
        hyps, scored = [hyps[i] for i in scored], list(range(len(scored)))
    bleu = _bleu(tokenize)
    corpus_correct: List[int] = []
    self_correct: List[List[int]] = [[] for _ in scored]
    with _gc_paused():
        hyp_toks = _sacrebleu_tokens(bleu, hyps)
        ref_toks = _sacrebleu_tokens(bleu, refs) if refs is not None else []
        for labels in _ngram_labels(hyp_toks + ref_toks, bleu.max_ngram_order):
            hyp_labels, ref_labels = labels[: len(hyps)], labels[len(hyps) :]
            if refs is not None:
                corpus_correct.append(sum(len(h & r) for h, r in zip(hyp_labels, ref_labels)))
            if scored:
                group = [hyp_labels[i] for i in scored]
                shared = _in_two_or_more(group)
                for correct, h in zip(self_correct, group):
                    correct.append(len(h & shared))
            labels = hyp_labels = ref_labels = group = shared = None  # free before the next order
    out: Dict[str, Optional[float]] = {"bleu": None, "self_bleu": None}
    if refs is not None:
        _warn_like_sacrebleu_if_tokenized(hyps)
        sys_len = sum(len(h) for h in hyp_toks)
        ref_len = sum(len(r) for r in ref_toks)  # one reference each: it is the closest
        total = [sum(max(0, len(h) - n) for h in hyp_toks) for n in range(bleu.max_ngram_order)]
        out["bleu"] = _compute_bleu(bleu, corpus_correct, total, sys_len, ref_len, effective_order=False)
    if with_self_bleu:
        lengths = [len(hyp_toks[i]) for i in scored]
        sorted_lengths = sorted(lengths)
        scores = [
            _sentence_bleu(bleu, c, n, _closest_length(sorted_lengths, n, leave_one_out=True))
            for c, n in zip(self_correct, lengths)
        ]
        out["self_bleu"] = sum(scores) / len(scores) if scores else 0.0
    return out


def reference_set_bleu(
    hyps: Sequence[str],
    refs: Sequence[str],
    max_hyps: Optional[int] = None,
    seed: int = 0,
    tokenize: str = "13a",
) -> float:
    """Mean sentence BLEU of each hypothesis against all of ``refs`` (sacrebleu's
    ``sentence_score``, in one pass). ``max_hyps``: score only a subset of that many
    hypotheses, drawn with ``seed`` (default: every hypothesis)."""
    hyps = list(hyps)
    if not hyps or not refs:
        return 0.0
    if max_hyps is not None and len(hyps) > max_hyps:
        hyps = random.Random(seed).sample(hyps, max_hyps)
    bleu = _bleu(tokenize)
    correct: List[List[int]] = [[] for _ in hyps]
    with _gc_paused():
        hyp_toks = _sacrebleu_tokens(bleu, hyps)
        ref_toks = _sacrebleu_tokens(bleu, refs)
        for labels in _ngram_labels(hyp_toks + ref_toks, bleu.max_ngram_order):
            union = set().union(*labels[len(hyps) :])
            for c, h in zip(correct, labels):
                c.append(len(h & union))
            labels = union = None  # free before the next order
    ref_lengths = sorted(len(r) for r in ref_toks)
    scores = [
        _sentence_bleu(bleu, c, len(h), _closest_length(ref_lengths, len(h)))
        for c, h in zip(correct, hyp_toks)
    ]
    return sum(scores) / len(scores)


# --- BLEU's counts (see the module docstring) ----------------------------------------------


def _bleu(tokenize: str):
    """A sacrebleu BLEU with its defaults (``exp`` smoothing, 4 n-gram orders) and
    this tokenizer: what sacrebleu's ``corpus_bleu`` and ``sentence_bleu`` build."""
    from sacrebleu.metrics import BLEU

    return BLEU(tokenize=tokenize)


def _sacrebleu_tokens(bleu, texts: Sequence[str]) -> List[List[str]]:
    """The tokens whose n-grams sacrebleu's BLEU counts: its preprocessing of the
    text (tokenizer; lowercasing if asked), then a whitespace split."""
    return [bleu._preprocess_segment(t).split() for t in texts]


def _compute_bleu(bleu, correct, total, sys_len: int, ref_len: int, effective_order: bool) -> float:
    """sacrebleu's own arithmetic (``BLEU.compute_bleu``) on these counts."""
    return bleu.compute_bleu(
        list(correct), list(total), sys_len, ref_len,
        smooth_method=bleu.smooth_method, smooth_value=bleu.smooth_value,
        effective_order=effective_order, max_ngram_order=bleu.max_ngram_order,
    ).score  # fmt: skip


def _sentence_bleu(bleu, correct: List[int], hyp_len: int, ref_len: int) -> float:
    """sacrebleu's sentence BLEU (``effective_order``) of a hypothesis of hyp_len
    tokens with these clipped counts per order and this closest reference length."""
    total = [max(0, hyp_len - n) for n in range(bleu.max_ngram_order)]
    return _compute_bleu(bleu, correct, total, hyp_len, ref_len, effective_order=True)


def _ngram_codes(seqs: Sequence[Sequence[str]], max_order: int) -> Iterator[List[List[int]]]:
    """For n = 1..max_order in turn: the n-grams of every sequence, in order, as integers.

    Tokens get ids 0..V-1 from one vocabulary for all the sequences, and the n-gram
    (t_1..t_n) is sum_k id(t_k) V^(n-k): two n-grams of one order get the same code
    exactly when they are equal.
    """
    seqs = list(seqs)
    vocab = {tok: i for i, tok in enumerate(set(chain.from_iterable(seqs)))}
    base = max(len(vocab), 1)
    ids = [list(map(vocab.__getitem__, s)) for s in seqs]
    codes = ids
    for n in range(1, max_order + 1):
        if n > 1:  # code of (t_i..t_{i+n-1}) = code of (t_i..t_{i+n-2}) * V + id(t_{i+n-1})
            codes = [list(map(add, map(mul, c, repeat(base)), s[n - 1 :])) for c, s in zip(codes, ids)]
        yield codes


def _ngram_labels(seqs: List[List[str]], max_order: int) -> Iterator[List[Set]]:
    """For n = 1..max_order in turn: the occurrence labels of the n-grams of every
    sequence (one set per sequence, see the module docstring). The n-grams are
    coded by ``_ngram_codes``; the k-th occurrence (k > 1) of code g is labelled
    (g, k), a tuple, which no code equals."""
    for codes in _ngram_codes(seqs, max_order):
        yield [_occurrence_labels(c) for c in codes]


def _occurrence_labels(codes: List[int]) -> Set:
    labels = set(codes)
    if len(labels) < len(codes):  # some n-gram occurs more than once
        labels.update((g, k) for g, c in Counter(codes).items() if c > 1 for k in range(2, c + 1))
    return labels


def _in_two_or_more(sets: List[Set]) -> Set:
    """The elements found in at least two of the sets."""
    seen: Set = set()
    shared: Set = set()
    for s in sets:
        shared |= s & seen
        seen |= s
    return shared


def _closest_length(sorted_lengths: List[int], length: int, leave_one_out: bool = False) -> int:
    """sacrebleu's closest reference length (``BLEU._get_closest_ref_len``): the
    length in sorted_lengths nearest to ``length``, the shorter on a tie;
    ``leave_one_out``: one copy of ``length`` (the hypothesis itself) is not a reference."""
    lo = bisect_left(sorted_lengths, length)
    hi = bisect_right(sorted_lengths, length)
    if hi - lo > leave_one_out:
        return length
    below = sorted_lengths[lo - 1] if lo > 0 else None
    above = sorted_lengths[hi] if hi < len(sorted_lengths) else None
    if above is None or (below is not None and length - below <= above - length):
        return below
    return above


def _warn_like_sacrebleu_if_tokenized(hyps: Sequence[str]) -> None:
    """sacrebleu's corpus BLEU warning for hypotheses that look tokenized."""
    if sum(h.endswith(" .") for h in hyps) >= 100:
        log = logging.getLogger("sacrebleu")
        log.warning("That's 100 lines that end in a tokenized period ('.')")
        log.warning("It looks like you forgot to detokenize your test data, which may hurt your score.")
        log.warning(
            "If you insist your data is detokenized, or don't care, you can suppress this "
            "message with the `force` parameter."
        )


@contextmanager
def _gc_paused():
    """Without the cyclic garbage collector: counting allocates hundreds of thousands
    of sets and lists (and no cycles), and its full passes over them cost more
    than the counting."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
