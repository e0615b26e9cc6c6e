"""Metric definitions.

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

How the counts are computed. Each text is tokenized once and each distinct token
gets an integer id (a dict of the distinct tokens), so a set of texts is one numpy
array of token ids and the offsets where each text starts (:class:`TokenIds`).
N-grams are numbered exactly, without hashing: a 1-gram's code is its token's id;
the n-gram (t_1..t_n) has the code number(t_1..t_{n-1}) * V + id(t_n), V the number
of distinct tokens, and number() renumbers the distinct codes of one order 0..D-1.
Two n-grams of one order get the same number exactly when they are equal, and a
code stays below D * V. One stable sort of the codes per order lists the
occurrences grouped by n-gram and, within one n-gram, by text: the (n-gram, text)
pairs and their counts. Memory grows with the number of tokens and of distinct
(n-gram, text) pairs, a few machine integers each, not with a Python object per
n-gram occurrence.

Each BLEU metric gives exactly what sacrebleu's ``sentence_score`` /
``corpus_score`` give (sacrebleu's tokenizer, n-gram orders 1..4, ``exp``
smoothing, ``effective_order`` for sentence BLEU, the closest reference length with
ties to the shorter), and sacrebleu's own ``BLEU.compute_bleu`` turns the counts
into the score. sacrebleu clips the count of n-gram g in a hypothesis at the
largest count of g among its references, so from the pairs:

- corpus BLEU, order n: the sum over texts i and n-grams g of min(count of g in
  hypothesis i, count of g in reference i).
- Self-BLEU: hypothesis i's references are all the other hypotheses (duplicates of
  its text at other indices included), so its count of g is clipped at the largest
  count of g among the others: the largest of all if another hypothesis holds it
  too (or i holds less), else the second largest (0 if no other hypothesis has g).
  The reference length is the length closest to i's among the others' lengths,
  from one sorted array (i's own length left out once).
- Reference-set BLEU: min(count of g in hypothesis i, largest count of g in any
  reference), and the closest length among the sorted reference lengths.

Calling sacrebleu's ``sentence_score`` once per hypothesis with all the others as
references extracts every hypothesis's n-grams once per other hypothesis: a cost
that grows with the square of their number. Here the cost is a few sorts of the
n-gram codes, order by order.

numpy is imported inside the functions that count: ``import fairseq_divgen.scoring``
and ``divgen-score --help`` stay light.
"""

import gc
import logging
import random
import statistics
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import chain, islice
from typing import TYPE_CHECKING, Dict, Iterable, Iterator, List, Optional, Sequence

if TYPE_CHECKING:  # numpy is imported where the counting runs, not at import time
    import numpy

_CHUNK = 8192  # texts tokenized at a time: bounds the Python token lists alive at once


def ngrams(tokens: Sequence[str], n: int) -> List[tuple]:
    """The n-grams (n >= 1) of one token sequence, in order."""
    return list(zip(*(tokens[i:] for i in range(n))))


# --- texts as token ids ----------------------------------------------------------------


@dataclass
class TokenIds:
    """Texts as token ids: ``ids[starts[i]:starts[i + 1]]`` are the tokens of text i."""

    ids: "numpy.ndarray"  # int32, every token of every text, text after text
    starts: "numpy.ndarray"  # int64, len(texts) + 1 offsets into ids
    vocab_size: int  # every id is below it

    def __len__(self) -> int:
        return len(self.starts) - 1

    @property
    def lengths(self):
        """Number of tokens of each text."""
        import numpy as np

        return np.diff(self.starts)


def token_ids(token_lists: Iterable[Sequence[str]], vocab: Optional[dict] = None) -> TokenIds:
    """The token lists as ids; ``vocab`` (token -> id, grown here) shares ids between calls."""
    import numpy as np

    vocab = {} if vocab is None else vocab
    chunks, lengths = [], []
    token_lists = iter(token_lists)
    with _gc_paused():
        while True:
            chunk = list(islice(token_lists, _CHUNK))
            if not chunk:
                break
            lengths.extend(map(len, chunk))
            flat = list(chain.from_iterable(chunk))
            for tok in set(flat).difference(vocab):
                vocab[tok] = len(vocab)
            chunks.append(np.fromiter(map(vocab.__getitem__, flat), np.int32, len(flat)))
    starts = np.zeros(len(lengths) + 1, np.int64)
    np.cumsum(lengths, out=starts[1:])
    ids = np.concatenate(chunks) if chunks else np.zeros(0, np.int32)
    return TokenIds(ids, starts, max(len(vocab), 1))


def _concat(first: TokenIds, second: TokenIds) -> TokenIds:
    """The texts of ``first`` then those of ``second`` (ids from one vocabulary)."""
    import numpy as np

    return TokenIds(
        np.concatenate([first.ids, second.ids]),
        np.concatenate([first.starts, second.starts[1:] + first.starts[-1]]),
        max(first.vocab_size, second.vocab_size),
    )


def _text_of_token(tokens: TokenIds):
    """The index of the text each token belongs to."""
    import numpy as np

    return np.repeat(np.arange(len(tokens), dtype=np.int32), tokens.lengths)


# --- n-grams as (n-gram, text) pairs -----------------------------------------------------


@dataclass
class NgramPairs:
    """The (n-gram, text) pairs of one order, sorted by n-gram, then text."""

    gram: "numpy.ndarray"  # number 0..n_distinct-1 of the n-gram of each pair
    text: "numpy.ndarray"  # the text of each pair
    count: "numpy.ndarray"  # occurrences of the n-gram in the text
    n_distinct: int
    n_occurrences: int


def ngram_pairs(tokens: TokenIds, max_order: int) -> Iterator[NgramPairs]:
    """For n = 1..max_order in turn: the n-grams of the texts as (n-gram, text) pairs
    with their counts (see the module docstring for the numbering)."""
    import numpy as np

    n_tokens = len(tokens.ids)
    index = np.int32 if n_tokens < 2**31 else np.int64
    text = _text_of_token(tokens)
    # tokens from each token to the end of its text, itself included
    room = np.repeat(tokens.starts[1:].astype(index), tokens.lengths)
    room -= np.arange(n_tokens, dtype=index)
    pos = np.arange(n_tokens, dtype=index)  # where each n-gram starts
    number = n_distinct = None
    for n in range(1, max_order + 1):
        if n == 1:
            # a stable sort of 16-bit keys is a radix sort: linear in the tokens
            small = tokens.vocab_size <= 2**16
            code = tokens.ids.astype(np.uint16) if small else tokens.ids
        else:
            fits = room[pos] >= n
            pos, prefix = pos[fits], number[fits]
            del fits, number
            _check_codes_fit(n_distinct, tokens.vocab_size)
            code = prefix.astype(np.int64) * tokens.vocab_size + tokens.ids[pos + (n - 1)]
            del prefix
        # pos is in the previous order's sorted order: the codes are sorted by their
        # prefix already, which the stable sort (timsort) exploits; being stable, it
        # keeps the occurrences of one n-gram in text order
        order = np.argsort(code, kind="stable")
        code, pos = code[order], pos[order]
        del order
        new_gram = np.empty(len(code), bool)
        new_gram[:1] = True
        np.not_equal(code[1:], code[:-1], out=new_gram[1:])
        del code
        number = np.cumsum(new_gram, dtype=index) - 1
        n_distinct = int(number[-1]) + 1 if len(number) else 0
        pairs = _pairs(number, text[pos], new_gram, n_distinct)
        del new_gram
        yield pairs
        del pairs


def _pairs(number, text, new_gram, n_distinct: int) -> NgramPairs:
    """The (n-gram, text) pairs of occurrences sorted by n-gram, then text."""
    import numpy as np

    new_pair = new_gram  # an occurrence starts a pair where its n-gram or its text changes
    new_pair[1:] |= text[1:] != text[:-1]
    first = np.flatnonzero(new_pair)
    count = np.diff(first, append=len(new_pair)).astype(number.dtype)
    return NgramPairs(number[first], text[first], count, n_distinct, len(number))


def _check_codes_fit(n_distinct: int, vocab_size: int) -> None:
    """The codes of the next order stay below n_distinct * vocab_size: int64 must hold it."""
    if n_distinct * vocab_size >= 2**63:
        raise OverflowError(f"{n_distinct} distinct n-grams x {vocab_size} tokens: too many")


def _groups(gram):
    """For pairs sorted by n-gram: where each n-gram's pairs start, and each pair's group."""
    import numpy as np

    is_first = np.empty(len(gram), bool)
    is_first[:1] = True
    np.not_equal(gram[1:], gram[:-1], out=is_first[1:])
    return np.flatnonzero(is_first), np.cumsum(is_first, dtype=gram.dtype) - 1


def _sum_per_text(text, values, n_texts: int):
    """The sum of the integer values of each text, as int64."""
    import numpy as np

    # float64 sums of integer counts are exact far beyond any corpus size
    return np.rint(np.bincount(text, weights=values, minlength=n_texts)).astype(np.int64)


# --- the whitespace metrics ------------------------------------------------------------


def distinct_n(hyps: Sequence[Sequence[str]], n: int) -> float:
    """Corpus distinct-n: unique n-grams / total n-grams (0 if there are none)."""
    return distinct_and_seq_rep(hyps, n)[0][n - 1]


def seq_rep_n(hyps: Sequence[Sequence[str]], n: int) -> float:
    """Mean over sequences with >= 1 n-gram of 1 - unique n-grams / n-grams."""
    return distinct_and_seq_rep(hyps, n)[1][n - 1]


def distinct_and_seq_rep(hyps: Sequence[Sequence[str]], max_order: int = 4):
    """``[distinct_n(hyps, n) for n in 1..max_order]`` and the same for seq_rep_n, in
    one pass."""
    return distinct_and_seq_rep_of_ids(token_ids(hyps), max_order)


def distinct_and_seq_rep_of_ids(hyps: TokenIds, max_order: int = 4):
    """:func:`distinct_and_seq_rep` of texts given as token ids."""
    import numpy as np

    distinct, seq_rep = [], []
    lengths = hyps.lengths
    for n, pairs in enumerate(ngram_pairs(hyps, max_order), 1):
        total = pairs.n_occurrences
        distinct.append(pairs.n_distinct / total if total else 0.0)
        unique_per_text = np.bincount(pairs.text, minlength=len(hyps))
        grams_per_text = np.maximum(lengths - (n - 1), 0)
        has = grams_per_text > 0
        values = 1.0 - unique_per_text[has] / grams_per_text[has]
        # summed in text order, as a Python loop over the texts would
        seq_rep.append(sum(values.tolist()) / len(values) if len(values) else 0.0)
    return distinct, seq_rep


def rep_wrep(
    hyps: Sequence[Sequence[str]],
    window: int,
    refs: Optional[Sequence[Sequence[str]]] = None,
) -> Dict[str, Optional[float]]:
    """rep/window and (with references) wrep/window, as fractions of all tokens."""
    vocab: dict = {}
    hyp_ids = token_ids(hyps, vocab)
    ref_ids = token_ids(refs, vocab) if refs is not None else None
    return rep_wrep_of_ids(hyp_ids, window, ref_ids)


def rep_wrep_of_ids(
    hyps: TokenIds, window: int, refs: Optional[TokenIds] = None
) -> Dict[str, Optional[float]]:
    """:func:`rep_wrep` of texts given as token ids (hyps and refs from one vocabulary)."""
    import numpy as np

    if window < 1:
        raise ValueError(f"window must be at least 1, not {window}")
    if refs is not None and len(refs) != len(hyps):
        raise ValueError(f"{len(hyps)} hypotheses but {len(refs)} references")
    total = len(hyps.ids)
    if total == 0:
        return {"rep": 0.0, "wrep": 0.0 if refs is not None else None}
    text = _text_of_token(hyps)
    key = text.astype(np.int64) * hyps.vocab_size + hyps.ids
    order = np.argsort(key, kind="stable")  # one token of one text: in position order
    key = key[order]
    # x_t repeats if the previous x_t of its text is at most `window` positions back
    repeats = np.zeros(total, bool)
    repeats[order[1:]] = (key[1:] == key[:-1]) & (np.diff(order) <= window)
    del key, order
    out: Dict[str, Optional[float]] = {"rep": int(repeats.sum()) / total, "wrep": None}
    if refs is not None:
        offset = np.arange(total) - hyps.starts[text]  # t, the position in the text
        has_ref = offset < refs.lengths[text]
        ref_at = np.where(has_ref, refs.starts[text] + offset, 0)
        ref_token = refs.ids[ref_at] if len(refs.ids) else np.full(total, -1, np.int32)
        wrong = ~has_ref | (ref_token != hyps.ids)
        out["wrep"] = int((repeats & wrong).sum()) / total
    return out


def uniq(hyps: Sequence[Sequence[str]]) -> int:
    """Number of distinct tokens generated."""
    return len({tok for h in hyps for tok in h})


def uniq_of_ids(hyps: TokenIds) -> int:
    """:func:`uniq` of texts given as token ids."""
    import numpy as np

    return int(np.count_nonzero(np.bincount(hyps.ids))) if len(hyps.ids) else 0


def length_stats(hyps: Sequence[Sequence[str]]) -> Dict[str, float]:
    """Mean and median hypothesis length in tokens."""
    return _length_stats([len(h) for h in hyps])


def _length_stats(lengths: List[int]) -> Dict[str, float]:
    """Mean and median of these lengths (0 for none)."""
    lengths = lengths or [0]
    return {"mean_len": statistics.mean(lengths), "median_len": statistics.median(lengths)}


def whitespace_metrics(
    hyps: Sequence[str], refs: Optional[Sequence[str]] = None, window: int = 16
) -> Dict[str, Optional[float]]:
    """distinct_1..4, seq_rep_2..4, rep_{window}, wrep_{window}, uniq, mean_len and
    median_len of texts split on whitespace, each text tokenized once."""
    vocab: dict = {}
    hyp_ids = token_ids((h.split() for h in hyps), vocab)
    ref_ids = token_ids((r.split() for r in refs), vocab) if refs is not None else None
    out: Dict[str, Optional[float]] = {}
    distinct, seq_rep = distinct_and_seq_rep_of_ids(hyp_ids, 4)
    for n in (1, 2, 3, 4):
        out[f"distinct_{n}"] = distinct[n - 1]
    for n in (2, 3, 4):
        out[f"seq_rep_{n}"] = seq_rep[n - 1]
    rw = rep_wrep_of_ids(hyp_ids, window, ref_ids)
    out[f"rep_{window}"] = rw["rep"]
    out[f"wrep_{window}"] = rw["wrep"]
    out["uniq"] = uniq_of_ids(hyp_ids)
    out.update(_length_stats(hyp_ids.lengths.tolist()))
    return out


# --- the BLEU metrics ----------------------------------------------------------------------


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
    import numpy as np

    hyps = list(hyps)
    if refs is not None and len(refs) != len(hyps):
        raise ValueError(f"{len(hyps)} hypotheses but {len(refs)} references")
    scored = _self_bleu_positions(len(hyps), self_bleu_max, seed) if with_self_bleu else []
    if refs is None and len(scored) < len(hyps):  # nothing else needs the others
        hyps, scored = [hyps[i] for i in scored], list(range(len(scored)))
    bleu = _bleu(tokenize)
    vocab: dict = {}
    tokens = _sacrebleu_ids(bleu, hyps, vocab)
    if refs is not None:
        tokens = _concat(tokens, _sacrebleu_ids(bleu, refs, vocab))
    n_hyps = len(hyps)
    in_scored = np.zeros(len(tokens), bool)
    in_scored[scored] = True
    corpus_correct: List[int] = []
    self_correct = []  # per order: the clipped count of each hypothesis
    for pairs in ngram_pairs(tokens, bleu.max_ngram_order):
        if refs is not None:
            corpus_correct.append(_corpus_clipped_count(pairs, n_hyps))
        if scored:
            self_correct.append(_clipped_by_the_others(pairs, in_scored, n_hyps))
        del pairs  # before the next order's are counted
    lengths = tokens.lengths
    hyp_lengths = lengths[:n_hyps]
    out: Dict[str, Optional[float]] = {"bleu": None, "self_bleu": None}
    if refs is not None:
        _warn_like_sacrebleu_if_tokenized(hyps)
        total = [int(np.maximum(hyp_lengths - n, 0).sum()) for n in range(bleu.max_ngram_order)]
        sys_len, ref_len = int(hyp_lengths.sum()), int(lengths[n_hyps:].sum())
        out["bleu"] = _compute_bleu(bleu, corpus_correct, total, sys_len, ref_len, False)
    if with_self_bleu:
        out["self_bleu"] = _mean_self_bleu(bleu, self_correct, hyp_lengths, scored)
    return out


def _self_bleu_positions(n_hyps: int, self_bleu_max: Optional[int], seed: int) -> List[int]:
    """The hypotheses self-BLEU scores: all, or the positions that
    random.Random(seed).sample(hyps, self_bleu_max) picks; none for fewer than 2."""
    scored = list(range(n_hyps))
    if self_bleu_max is not None and n_hyps > self_bleu_max:
        scored = random.Random(seed).sample(scored, self_bleu_max)
    return scored if len(scored) >= 2 else []


def _mean_self_bleu(bleu, self_correct, hyp_lengths, scored: List[int]) -> float:
    """The mean sentence BLEU of the scored hypotheses, summed in ``scored``'s order."""
    import numpy as np

    if not scored:
        return 0.0
    lengths = hyp_lengths[scored]
    ref_lengths = _closest_lengths(np.sort(lengths), lengths, leave_one_out=True)
    correct = np.stack(self_correct, axis=1)[scored]
    scores = _sentence_bleus(bleu, correct.tolist(), lengths.tolist(), ref_lengths.tolist())
    return sum(scores) / len(scores)


def _corpus_clipped_count(pairs: NgramPairs, n_hyps: int) -> int:
    """Sum over hypotheses i (texts 0..n_hyps-1, reference i is text n_hyps + i) and
    n-grams g of min(count of g in hypothesis i, count of g in reference i)."""
    import numpy as np

    is_hyp = pairs.text < n_hyps
    is_ref = ~is_hyp
    # (n-gram, sentence) keys; both are ascending, as the pairs are sorted
    hyp_key = pairs.gram[is_hyp].astype(np.int64) * n_hyps + pairs.text[is_hyp]
    ref_key = pairs.gram[is_ref].astype(np.int64) * n_hyps + (pairs.text[is_ref] - n_hyps)
    if not len(hyp_key) or not len(ref_key):
        return 0
    at = np.minimum(np.searchsorted(hyp_key, ref_key), len(hyp_key) - 1)
    matched = hyp_key[at] == ref_key
    return int(np.minimum(pairs.count[is_hyp][at[matched]], pairs.count[is_ref][matched]).sum())


def _clipped_by_the_others(pairs: NgramPairs, in_scored, n_hyps: int):
    """Per hypothesis (of the texts with ``in_scored``): the sum over its n-grams g of
    min(its count of g, the largest count of g among the other scored hypotheses)."""
    import numpy as np

    keep = in_scored[pairs.text]
    gram, text, count = pairs.gram[keep], pairs.text[keep], pairs.count[keep]
    if not len(gram):
        return np.zeros(n_hyps, np.int64)
    first, group = _groups(gram)
    largest = np.maximum.reduceat(count, first)[group]
    n_largest = np.add.reduceat((count == largest).astype(np.int64), first)[group]
    below_largest = np.maximum.reduceat(np.where(count < largest, count, 0), first)[group]
    # the largest among the others is the largest unless this text alone holds it
    others_largest = np.where((count < largest) | (n_largest > 1), largest, below_largest)
    return _sum_per_text(text, np.minimum(count, others_largest), n_hyps)


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
    import numpy as np

    hyps = list(hyps)
    if not hyps or not refs:
        return 0.0
    if max_hyps is not None and len(hyps) > max_hyps:
        hyps = random.Random(seed).sample(hyps, max_hyps)
    bleu = _bleu(tokenize)
    vocab: dict = {}
    tokens = _concat(_sacrebleu_ids(bleu, hyps, vocab), _sacrebleu_ids(bleu, refs, vocab))
    n_hyps = len(hyps)
    correct = [_clipped_by_references(p, n_hyps) for p in ngram_pairs(tokens, bleu.max_ngram_order)]
    lengths = tokens.lengths
    hyp_lengths = lengths[:n_hyps]
    ref_lengths = _closest_lengths(np.sort(lengths[n_hyps:]), hyp_lengths)
    correct = np.stack(correct, axis=1)
    scores = _sentence_bleus(bleu, correct.tolist(), hyp_lengths.tolist(), ref_lengths.tolist())
    return sum(scores) / len(scores)


def _clipped_by_references(pairs: NgramPairs, n_hyps: int):
    """Per hypothesis (texts 0..n_hyps-1; the others are references): the sum over its
    n-grams g of min(its count of g, the largest count of g in any reference)."""
    import numpy as np

    if not len(pairs.gram):
        return np.zeros(n_hyps, np.int64)
    is_ref = pairs.text >= n_hyps
    first, group = _groups(pairs.gram)
    largest_in_refs = np.maximum.reduceat(np.where(is_ref, pairs.count, 0), first)[group]
    is_hyp = ~is_ref
    clipped = np.minimum(pairs.count, largest_in_refs)[is_hyp]
    return _sum_per_text(pairs.text[is_hyp], clipped, n_hyps)


# --- BLEU's arithmetic: sacrebleu's ----------------------------------------------------------


def _bleu(tokenize: str):
    """A sacrebleu BLEU with its defaults (``exp`` smoothing, 4 n-gram orders) and
    this tokenizer: what sacrebleu's ``corpus_bleu`` and ``sentence_bleu`` build."""
    from sacrebleu.metrics import BLEU

    return BLEU(tokenize=tokenize)


def _sacrebleu_ids(bleu, texts: Sequence[str], vocab: dict) -> TokenIds:
    """The tokens whose n-grams sacrebleu's BLEU counts, as ids: its preprocessing of
    the text (tokenizer; lowercasing if asked), then a whitespace split."""
    return token_ids((bleu._preprocess_segment(t).split() for t in texts), vocab)


def _compute_bleu(bleu, correct, total, sys_len: int, ref_len: int, effective_order: bool) -> float:
    """sacrebleu's own arithmetic (``BLEU.compute_bleu``) on these counts."""
    return bleu.compute_bleu(
        list(correct),
        list(total),
        sys_len,
        ref_len,
        smooth_method=bleu.smooth_method,
        smooth_value=bleu.smooth_value,
        effective_order=effective_order,
        max_ngram_order=bleu.max_ngram_order,
    ).score


def _sentence_bleus(bleu, correct: List[List[int]], hyp_lengths: List[int], ref_lengths: List[int]):
    """sacrebleu's sentence BLEU (``effective_order``) of each hypothesis, from its
    clipped counts per order, its length and its closest reference length."""
    memo: Dict[tuple, float] = {}  # short texts share their counts: compute each once
    scores = []
    for c, hyp_len, ref_len in zip(correct, hyp_lengths, ref_lengths):
        key = (*c, hyp_len, ref_len)
        score = memo.get(key)
        if score is None:
            total = [max(0, hyp_len - n) for n in range(bleu.max_ngram_order)]
            score = memo[key] = _compute_bleu(bleu, c, total, hyp_len, ref_len, True)
        scores.append(score)
    return scores


def _closest_lengths(sorted_lengths, lengths, leave_one_out: bool = False):
    """sacrebleu's closest reference length (``BLEU._get_closest_ref_len``) of each of
    ``lengths``: the length in sorted_lengths nearest to it, the shorter on a tie;
    ``leave_one_out``: one copy of the length (the hypothesis itself) is not a reference."""
    import numpy as np

    lo = np.searchsorted(sorted_lengths, lengths, "left")
    hi = np.searchsorted(sorted_lengths, lengths, "right")
    own = hi - lo > int(leave_one_out)
    below = sorted_lengths[np.maximum(lo - 1, 0)]
    above = sorted_lengths[np.minimum(hi, len(sorted_lengths) - 1)]
    take_below = (hi >= len(sorted_lengths)) | ((lo > 0) & (lengths - below <= above - lengths))
    return np.where(own, lengths, np.where(take_below, below, above))


def _warn_like_sacrebleu_if_tokenized(hyps: Sequence[str]) -> None:
    """sacrebleu's corpus BLEU warning for hypotheses that look tokenized."""
    if sum(h.endswith(" .") for h in hyps) >= 100:
        log = logging.getLogger("sacrebleu")
        log.warning("That's 100 lines that end in a tokenized period ('.')")
        log.warning(
            "It looks like you forgot to detokenize your test data, which may hurt your score."
        )
        log.warning(
            "If you insist your data is detokenized, or don't care, you can suppress this "
            "message with the `force` parameter."
        )


@contextmanager
def _gc_paused():
    """Without the cyclic garbage collector: tokenizing allocates hundreds of
    thousands of lists (and no cycles), and its full passes over them cost more than
    the tokenizing."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
