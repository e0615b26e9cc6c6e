"""Test prefixes for continuation, and continuations cut out of fairseq-generate output.

    python prefixes.py make wiki.test.tokens OUT_DIR --prefix-len 50 --cont-len 100
    python prefixes.py cut GENERATE_OUT OUT_DIR/continuation.ref OUT.txt --prefix-len 50

``make``: every WikiText paragraph (not a `` = heading = `` line, not blank) with at
least prefix-len + cont-len tokens gives one example: its first prefix-len tokens go to
OUT_DIR/prefix.tokens (what the model continues), the next cont-len tokens to
OUT_DIR/continuation.ref (the human continuation, the reference of wrep and BLEU).

``cut``: fairseq-generate (language_modeling task) prints each hypothesis with the
prefix it was forced to start with; ``cut`` drops those prefix-len tokens and writes
H-/T- lines in fairseq-generate's format (T = the human continuation), so one
``divgen-score`` call can score every system and decoding.
"""

import argparse
import sys
from pathlib import Path


def make(test_tokens: Path, out_dir: Path, prefix_len: int, cont_len: int) -> None:
    """Write prefix.tokens and continuation.ref from the test paragraphs."""
    prefixes, refs = [], []
    for line in test_tokens.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if not stripped or (stripped.startswith("=") and stripped.endswith("=")):
            continue
        tokens = stripped.split()
        if len(tokens) >= prefix_len + cont_len:
            prefixes.append(" ".join(tokens[:prefix_len]))
            refs.append(" ".join(tokens[prefix_len : prefix_len + cont_len]))
    if not prefixes:
        sys.exit(f"error: no paragraph of {test_tokens} has {prefix_len + cont_len} tokens")
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "prefix.tokens").write_text("".join(p + "\n" for p in prefixes), encoding="utf-8")
    (out_dir / "continuation.ref").write_text("".join(r + "\n" for r in refs), encoding="utf-8")
    print(
        f"{len(prefixes)} prefixes of {prefix_len} tokens (+ {cont_len} reference tokens) -> {out_dir}"
    )


def cut(generate_out: Path, refs_path: Path, prefix_len: int, out: Path) -> None:
    """Continuations (hypothesis minus its prefix) with their references, as H-/T- lines."""
    refs = refs_path.read_text(encoding="utf-8").splitlines()
    rows = {}
    for line in generate_out.read_text(encoding="utf-8").splitlines():
        if line.startswith("H-"):
            sid, score, text = (line[2:].split("\t") + [""])[:3]
            rows.setdefault(int(sid), (score, " ".join(text.split()[prefix_len:])))
    if sorted(rows) != list(range(len(refs))):
        sys.exit(f"error: {generate_out} has {len(rows)} hypotheses for {len(refs)} prefixes")
    out.write_text(
        "".join(f"T-{i}\t{refs[i]}\nH-{i}\t{rows[i][0]}\t{rows[i][1]}\n" for i in sorted(rows)),
        encoding="utf-8",
    )


def main(argv=None) -> None:
    """Command-line entry: ``make`` or ``cut``."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("make")
    m.add_argument("test_tokens", type=Path)
    m.add_argument("out_dir", type=Path)
    m.add_argument("--prefix-len", type=int, default=50)
    m.add_argument("--cont-len", type=int, default=100)
    c = sub.add_parser("cut")
    c.add_argument("generate_out", type=Path)
    c.add_argument("refs", type=Path)
    c.add_argument("out", type=Path)
    c.add_argument("--prefix-len", type=int, default=50)
    args = p.parse_args(argv)
    if args.cmd == "make":
        make(args.test_tokens, args.out_dir, args.prefix_len, args.cont_len)
    else:
        cut(args.generate_out, args.refs, args.prefix_len, args.out)


if __name__ == "__main__":
    main(sys.argv[1:])
