"""Metric definitions (ALGORITHMS.md section 5). Texts are whitespace-tokenized.

- corpus BLEU: sacrebleu's corpus BLEU of the hypotheses against one reference each.
- self-BLEU (Zhu et al., Texygen 2018): mean over hypotheses i of sacrebleu's
  sentence BLEU of hypothesis i with every *other* hypothesis as a reference. For
  more than ``max_hyps`` hypotheses, a subset of that size is drawn with a fixed
  seed and scored within itself. Higher means less diverse.
- reference-set BLEU (Texygen's BLEU, used for samples of a language model): mean
  over hypotheses of sacrebleu's sentence BLEU with the *whole* reference set as
  the references of every hypothesis (subset of ``max_hyps`` as for self-BLEU).
- distinct-n (Li et al., 2016): unique n-grams of the corpus / total n-grams.
- seq-rep-n (Welleck et al., 2020): per sequence, 1 - unique n-grams / total
  n-grams; averaged over the sequences that have at least one n-gram.
- rep/l (Welleck et al., 2020): fraction of tokens x_t that also occur among the
  previous l tokens x_{t-l}..x_{t-1} of the same sequence.
- wrep/l: the same repeats, counted only where x_t differs from the reference
  token at position t (or the reference has ended): "wrong" repeats. Needs references.
- uniq: number of distinct tokens over all hypotheses.
"""
import random
import statistics
from collections import Counter
from typing import Dict, List, Optional, Sequence


def ngrams(tokens: Sequence[str], n: int) -> List[tuple]:
    """The n-grams of one token sequence, in order."""
    return [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


def distinct_n(hyps: Sequence[Sequence[str]], n: int) -> float:
    """Corpus distinct-n: unique n-grams / total n-grams (0 if there are none)."""
    counts = Counter(g for h in hyps for g in ngrams(h, n))
    total = sum(counts.values())
    return len(counts) / total if total else 0.0


def seq_rep_n(hyps: Sequence[Sequence[str]], n: int) -> float:
    """Mean over sequences with >= 1 n-gram of 1 - unique n-grams / n-grams."""
    values = []
    for h in hyps:
        grams = ngrams(h, n)
        if grams:
            values.append(1.0 - len(set(grams)) / len(grams))
    return sum(values) / len(values) if values else 0.0


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
    import sacrebleu

    return sacrebleu.corpus_bleu(list(hyps), [list(refs)], tokenize=tokenize).score


def self_bleu(
    hyps: Sequence[str], max_hyps: int = 500, seed: int = 0, tokenize: str = "13a"
) -> float:
    """Mean sentence BLEU of each hypothesis against all the others (sacrebleu)."""
    from sacrebleu.metrics import BLEU

    hyps = list(hyps)
    if len(hyps) < 2:
        return 0.0
    if len(hyps) > max_hyps:
        hyps = random.Random(seed).sample(hyps, max_hyps)
    bleu = BLEU(tokenize=tokenize, effective_order=True)
    scores = [
        bleu.sentence_score(h, hyps[:i] + hyps[i + 1 :]).score for i, h in enumerate(hyps)
    ]
    return sum(scores) / len(scores)


def reference_set_bleu(
    hyps: Sequence[str],
    refs: Sequence[str],
    max_hyps: int = 500,
    seed: int = 0,
    tokenize: str = "13a",
) -> float:
    """Mean sentence BLEU of each hypothesis against all of ``refs`` (sacrebleu)."""
    from sacrebleu.metrics import BLEU

    hyps = list(hyps)
    if not hyps or not refs:
        return 0.0
    if len(hyps) > max_hyps:
        hyps = random.Random(seed).sample(hyps, max_hyps)
    # One segment whose references are all of refs: sacrebleu extracts their n-gram
    # statistics once and scores each hypothesis as that segment.
    bleu = BLEU(tokenize=tokenize, effective_order=True, references=[[r] for r in refs])
    scores = [bleu.corpus_score([h], None).score for h in hyps]
    return sum(scores) / len(scores)
