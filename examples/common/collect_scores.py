"""Merge a recipe's scores into one table: WORKDIR/scores.json and scores.md.

    python collect_scores.py OUT_PREFIX --divgen divgen.json [--extra rouge.json]
                             [--eval-lm NAME=eval-lm.log ...]

Rows are systems, named after the stem of each scored file (``gen/mle.txt`` -> ``mle``).
``--extra`` JSON files hold ``{name: {metric: value}}``; ``--eval-lm`` parses the
"Loss (base 2): ..., Perplexity: ..." line of a fairseq-eval-lm log. A value for
``name`` goes to the row ``name`` and to rows ``name-<decoding>``.
"""

import argparse
import json
import math
import re
import sys
from pathlib import Path

EVAL_LM_LINE = re.compile(r"Loss \(base 2\): ([0-9.eE+-]+), Perplexity: ([0-9.eE+-]+|inf|nan)")


def parse_eval_lm(log: Path) -> dict:
    """Test loss (base 2) and perplexity from a fairseq-eval-lm log."""
    found = EVAL_LM_LINE.findall(log.read_text(encoding="utf-8", errors="replace"))
    if not found:
        sys.exit(
            f"error: {log}: no 'Loss (base 2): ..., Perplexity: ...' line; did fairseq-eval-lm finish?"
        )
    loss, ppl = found[-1]
    return {"test_loss_base2": float(loss), "test_ppl": float(ppl)}


def merge(rows: dict, extra: dict) -> None:
    """Add ``extra[name]`` metrics to row ``name`` and rows ``name-*`` (creating ``name`` if none)."""
    for name, metrics in extra.items():
        targets = [r for r in rows if r == name or r.startswith(name + "-")] or [name]
        for r in targets:
            rows.setdefault(r, {}).update(metrics)


def main(argv=None) -> int:
    """Write OUT_PREFIX.json and OUT_PREFIX.md; print the table."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out_prefix", type=Path)
    p.add_argument("--divgen", type=Path, required=True, help="divgen-score --json output")
    p.add_argument("--extra", type=Path, action="append", default=[])
    p.add_argument("--eval-lm", action="append", default=[], metavar="NAME=LOG")
    args = p.parse_args(argv)

    rows = {Path(k).stem: v for k, v in json.loads(args.divgen.read_text()).items()}
    for path in args.extra:
        merge(rows, json.loads(path.read_text()))
    for spec in args.eval_lm:
        name, _, log = spec.partition("=")
        merge(rows, {name: parse_eval_lm(Path(log))})

    numeric = {
        name: {
            k: v for k, v in m.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
        }
        for name, m in rows.items()
    }
    bad = [f"{n}.{k}" for n, m in numeric.items() for k, v in m.items() if not math.isfinite(v)]
    args.out_prefix.with_suffix(".json").write_text(json.dumps(numeric, indent=2) + "\n")

    from fairseq_divgen.scoring.cli import markdown_table

    keys = list(dict.fromkeys(k for m in numeric.values() for k in m))
    table = markdown_table({n: {k: m.get(k) for k in keys} for n, m in numeric.items()})
    args.out_prefix.with_suffix(".md").write_text(table + "\n")
    print(table)
    if bad:
        print("warning: non-finite values: " + ", ".join(bad), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
