"""ROUGE-1/2/L/Lsum (F1 x 100, mean over the test set) of fairseq-generate summaries.

    python rouge.py --refs test.target --json rouge.json gen/mle.txt gen/tailr.txt ...

Hypotheses are the D- (detokenized) lines of each fairseq-generate output, in sentence
order; references the untokenized test targets. Scores come from Google's
``rouge-score`` package (a Python reimplementation of ROUGE-1.5.5) with Porter stemming;
for ROUGE-Lsum, texts are split into sentences after ., ! or ? followed by a space.
fairseq's README scores with files2rouge (the Perl ROUGE-1.5.5 after Stanford PTB
tokenization), so its numbers and these are close but not identical.
"""

import argparse
import json
import re
import sys
from pathlib import Path

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL", "rougeLsum")
SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def rouge_scores(hyps, refs) -> dict:
    """Mean F1 (x 100) of each ROUGE type over hypothesis/reference pairs."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)
    totals = dict.fromkeys(ROUGE_TYPES, 0.0)
    for hyp, ref in zip(hyps, refs):
        # rougeLsum reads one sentence per line
        scores = scorer.score(
            "\n".join(SENTENCE_END.split(ref)), "\n".join(SENTENCE_END.split(hyp))
        )
        for k in ROUGE_TYPES:
            totals[k] += scores[k].fmeasure
    return {k: 100.0 * v / max(len(hyps), 1) for k, v in totals.items()}


def main(argv=None) -> int:
    """Score each generate output; write {system: {rouge1: ..., ...}} as JSON."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("generate_outputs", nargs="+", type=Path)
    p.add_argument("--refs", type=Path, required=True)
    p.add_argument("--json", type=Path, required=True)
    args = p.parse_args(argv)
    try:
        import rouge_score  # noqa: F401
    except ImportError:
        print(
            "error: ROUGE not computed: the rouge-score package is not installed for "
            f"{sys.executable}.\nInstall it with `pip install rouge-score` (or this "
            "package's extra: pip install 'fairseq-divgen[rouge]'), then rerun the score stage.",
            file=sys.stderr,
        )
        return 2
    from fairseq_divgen.scoring.read import read_generate_output, read_lines

    refs = read_lines(args.refs)
    results = {}
    for path in args.generate_outputs:
        hyps, _ = read_generate_output(path, detok=True)
        if len(hyps) != len(refs):
            sys.exit(
                f"error: {path} has {len(hyps)} hypotheses, {args.refs} has {len(refs)} references"
            )
        results[path.stem] = rouge_scores(hyps, refs)
        print(f"{path.stem}: " + ", ".join(f"{k} {v:.2f}" for k, v in results[path.stem].items()))
    args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
