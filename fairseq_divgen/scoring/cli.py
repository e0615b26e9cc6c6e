"""``divgen-score``: quality and diversity of generated text, as a table and JSON.

    divgen-score generate-test.txt                # fairseq-generate output
    divgen-score --hyps samples.txt [--refs ref.txt]

Self-BLEU is computed over every hypothesis by default; ``--self-bleu-max N`` scores
a seeded random subset of N instead (see fairseq_divgen/scoring/metrics.py).
"""
import argparse
import json
import math
import sys
from pathlib import Path
from typing import Dict, List, Optional

from .metrics import bleu_and_self_bleu, whitespace_metrics
from .read import read_generate_output, read_lines


def score_texts(
    hyps: List[str],
    refs: Optional[List[str]] = None,
    window: int = 16,
    self_bleu_max: Optional[int] = None,
    seed: int = 0,
    tokenize: str = "13a",
) -> Dict[str, float]:
    """Every metric of this package for one set of hypotheses (and references).
    Self-BLEU over every hypothesis, or over a subset of ``self_bleu_max`` drawn with ``seed``."""
    out: Dict[str, float] = {"n": len(hyps)}
    out.update(bleu_and_self_bleu(hyps, refs, self_bleu_max, seed, tokenize))
    out.update(whitespace_metrics(hyps, refs, window))
    return out


def markdown_table(rows: Dict[str, Dict[str, float]]) -> str:
    """Rows (name -> metrics) as a markdown table; missing values shown as '-'."""
    keys = list(next(iter(rows.values())).keys())
    lines = ["| system | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
    for name, metrics in rows.items():
        cells = []
        for k in keys:
            v = metrics.get(k)
            if v is None or (isinstance(v, float) and math.isnan(v)):
                cells.append("-")
            elif isinstance(v, float):
                cells.append(f"{v:.4g}" if abs(v) < 1 else f"{v:.2f}")
            else:
                cells.append(str(v))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    """Entry point of ``divgen-score``."""
    p = argparse.ArgumentParser(prog="divgen-score", description=__doc__.splitlines()[0])
    p.add_argument("generate_outputs", nargs="*", type=Path, help="fairseq-generate output files")
    p.add_argument("--hyps", type=Path, nargs="*", default=[], help="plain text, one hypothesis per line")
    p.add_argument("--refs", type=Path, help="plain text references for --hyps, one per line")
    p.add_argument("--all-nbest", action="store_true", help="score every n-best hypothesis, not only the first")
    p.add_argument("--detok", action="store_true", help="read D- (detokenized) lines instead of H-")
    p.add_argument("--window", type=int, default=16, help="l of rep/l and wrep/l (default 16)")
    p.add_argument(
        "--self-bleu-max", type=int, metavar="N",
        help="self-BLEU of a random subset of N hypotheses (drawn with --seed, each scored "
        "against the other N-1) instead of every hypothesis against all the others, the "
        "default. A subset's self-BLEU is not comparable with the full set's (older versions "
        "of divgen-score used a subset of 500)",
    )  # fmt: skip
    p.add_argument("--seed", type=int, default=0, help="seed of the --self-bleu-max subset (default 0)")
    p.add_argument("--tokenize", default="13a", help="sacrebleu tokenizer (default 13a; 'none' for pre-tokenized text)")
    p.add_argument("--json", type=Path, help="also write the results here as JSON")
    args = p.parse_args(argv)
    if not args.generate_outputs and not args.hyps:
        p.error("give fairseq-generate output files or --hyps FILE")
    if args.self_bleu_max is not None and args.self_bleu_max < 2:
        p.error("--self-bleu-max needs at least 2 hypotheses (self-BLEU scores each against the others)")
    if args.refs and len(args.hyps) != 1:
        p.error("--refs goes with exactly one --hyps file")
    rows = {}
    for path in args.generate_outputs:
        if not path.is_file():
            p.error(f"{path}: no such file")
        hyps, refs = read_generate_output(path, args.all_nbest, args.detok)
        rows[str(path)] = score_texts(hyps, refs, args.window, args.self_bleu_max, args.seed, args.tokenize)
    for path in args.hyps:
        if not path.is_file():
            p.error(f"--hyps {path}: no such file")
        hyps = read_lines(path)
        refs = read_lines(args.refs) if args.refs else None
        if refs is not None and len(refs) != len(hyps):
            p.error(f"--refs {args.refs} has {len(refs)} lines, --hyps {path} has {len(hyps)}")
        rows[str(path)] = score_texts(hyps, refs, args.window, args.self_bleu_max, args.seed, args.tokenize)
    print(markdown_table(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
