#!/usr/bin/env python3
"""Wall time of ``divgen-score`` on synthetic text, before and after the one-pass self-BLEU.

Development tooling, not a test. Writes 3000 hypotheses and 3000 references of
about 20 and of about 200 tokens (words drawn from a Zipfian vocabulary, fixed
seed), then times ``divgen-score --hyps H --refs R --json J`` in a fresh
subprocess (the median of ``--repeats`` runs) for:

- ``before``: the previous implementation, copied below (``_previous_*``): self-BLEU
  as one sacrebleu ``sentence_score`` per hypothesis against the 499 others of a
  seeded 500-hypothesis subset, corpus BLEU with ``sacrebleu.corpus_bleu``;
- ``after``: the installed code, by default (self-BLEU over every hypothesis) and
  with ``--self-bleu-max 500`` (the same subset as ``before``, so the same value).

Prints a markdown table (time, and the self-BLEU and BLEU each run printed)::

    .venv/bin/python scripts/bench_scoring.py                # ~15 min on 2 busy cores
    .venv/bin/python scripts/bench_scoring.py --only after   # under a minute

``--scale`` measures instead the wall time and the peak memory (``/usr/bin/time -v``,
one run each, one after the other) of ``divgen-score`` on 200,000 hypotheses and
200,000 references of about 20 tokens, with references, with ``--self-bleu-max
500`` and without references: ``before`` is the package as of commit
``--before-commit`` (63b8168, extracted with ``git archive``), ``after`` this checkout::

    .venv/bin/python scripts/bench_scoring.py --scale --workdir /tmp/bench-scale  # ~4 min
"""

import argparse
import itertools
import json
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
N_LINES = 3000
LENGTHS = (20, 200)
SCALE_LINES = 200_000
BEFORE_COMMIT = "63b8168"  # the last divgen-score that counted n-grams in Python sets


def synthetic_lines(n: int, mean_len: int, seed: int, vocab: int = 10000) -> list:
    """n lines of about mean_len words (uniform in [mean_len/2, 3 mean_len/2]),
    the words Zipfian (exponent 1.1) over ``vocab`` types, each line ending in '.'."""
    rng = random.Random(seed)
    words = [f"w{i}" for i in range(vocab)]
    cum = list(itertools.accumulate(1.0 / (r + 1) ** 1.1 for r in range(vocab)))
    lines = []
    for _ in range(n):
        length = rng.randint(mean_len // 2, mean_len * 3 // 2)
        lines.append(" ".join(rng.choices(words, cum_weights=cum, k=length)) + ".")
    return lines


# --- before: divgen-score's metrics as they were before the one-pass BLEU (commit dc7e4ca),
# renamed; _previous_score_texts also turns self_bleu_max=None into the old default, 500.


def _previous_ngrams(tokens, n):
    return [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


def _previous_distinct_n(hyps, n):
    from collections import Counter

    counts = Counter(g for h in hyps for g in _previous_ngrams(h, n))
    total = sum(counts.values())
    return len(counts) / total if total else 0.0


def _previous_seq_rep_n(hyps, n):
    values = []
    for h in hyps:
        grams = _previous_ngrams(h, n)
        if grams:
            values.append(1.0 - len(set(grams)) / len(grams))
    return sum(values) / len(values) if values else 0.0


def _previous_rep_wrep(hyps, window, refs=None):
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


def _previous_corpus_bleu(hyps, refs, tokenize="13a"):
    import sacrebleu

    return sacrebleu.corpus_bleu(list(hyps), [list(refs)], tokenize=tokenize).score


def _previous_self_bleu(hyps, max_hyps=500, seed=0, tokenize="13a"):
    from sacrebleu.metrics import BLEU

    hyps = list(hyps)
    if len(hyps) < 2:
        return 0.0
    if len(hyps) > max_hyps:
        hyps = random.Random(seed).sample(hyps, max_hyps)
    bleu = BLEU(tokenize=tokenize, effective_order=True)
    scores = [bleu.sentence_score(h, hyps[:i] + hyps[i + 1 :]).score for i, h in enumerate(hyps)]
    return sum(scores) / len(scores)


def _previous_score_texts(hyps, refs=None, window=16, self_bleu_max=500, seed=0, tokenize="13a"):
    import statistics as st

    self_bleu_max = 500 if self_bleu_max is None else self_bleu_max  # the old default
    toks = [h.split() for h in hyps]
    ref_toks = [r.split() for r in refs] if refs is not None else None
    out = {"n": len(hyps)}
    out["bleu"] = _previous_corpus_bleu(hyps, refs, tokenize) if refs is not None else None
    out["self_bleu"] = _previous_self_bleu(hyps, self_bleu_max, seed, tokenize)
    for n in (1, 2, 3, 4):
        out[f"distinct_{n}"] = _previous_distinct_n(toks, n)
    for n in (2, 3, 4):
        out[f"seq_rep_{n}"] = _previous_seq_rep_n(toks, n)
    rw = _previous_rep_wrep(toks, window, ref_toks)
    out[f"rep_{window}"] = rw["rep"]
    out[f"wrep_{window}"] = rw["wrep"]
    out["uniq"] = len({tok for h in toks for tok in h})
    lengths = [len(h) for h in toks] or [0]
    out.update({"mean_len": st.mean(lengths), "median_len": st.median(lengths)})
    return out


def _run_previous(argv) -> int:
    """divgen-score's command line with the previous score_texts."""
    from fairseq_divgen.scoring import cli

    cli.score_texts = _previous_score_texts
    return cli.main(argv)


# --- scale: wall time and peak memory of one run each ----------------------------------


def time_v(cmd, tree: Path) -> dict:
    """Wall seconds and peak resident memory (MiB) of cmd, from /usr/bin/time -v, run
    in ``tree`` (``python -m`` imports from the working folder first) with it on PYTHONPATH."""
    result = subprocess.run(
        ["/usr/bin/time", "-v"] + cmd,
        cwd=tree,
        env=dict(os.environ, PYTHONPATH=str(tree)),
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (\S+)", result.stderr)
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", result.stderr)
    seconds = sum(float(x) * 60**i for i, x in enumerate(reversed(wall.group(1).split(":"))))
    return {"wall": seconds, "rss_mib": int(rss.group(1)) / 1024}


def extract_commit(commit: str, into: Path) -> Path:
    """The fairseq_divgen package as of ``commit``, under ``into`` (git archive)."""
    into.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(
        ["git", "archive", commit, "fairseq_divgen"], cwd=ROOT, check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def scale(work: Path, n_lines: int, before_commit: str, only) -> str:
    """The --scale table: one /usr/bin/time -v run per implementation and variant."""
    hyps, refs = work / f"scale-hyps{n_lines}.txt", work / f"scale-refs{n_lines}.txt"
    if not hyps.exists():
        hyps.write_text("\n".join(synthetic_lines(n_lines, 20, seed=1)) + "\n")
        refs.write_text("\n".join(synthetic_lines(n_lines, 20, seed=2)) + "\n")
    trees = {}
    if only in (None, "before"):
        trees[f"before ({before_commit})"] = extract_commit(before_commit, work / before_commit)
    if only in (None, "after"):
        trees["after"] = ROOT
    variants = [
        ("with --refs", ["--refs", str(refs)]),
        ("with --refs, `--self-bleu-max 500`", ["--refs", str(refs), "--self-bleu-max", "500"]),
        ("no references", []),
    ]
    lines = [
        "| implementation | input | wall s | max RSS (MiB) | self-BLEU | BLEU |",
        "|---|---|---|---|---|---|",
    ]
    for name, tree in trees.items():
        for variant, extra in variants:
            out = work / "scale.json"
            cmd = [
                sys.executable,
                "-m",
                "fairseq_divgen.scoring.cli",
                "--hyps",
                str(hyps),
                "--json",
                str(out),
            ] + extra
            measured = time_v(cmd, tree)
            row = next(iter(json.loads(out.read_text()).values()))
            bleu = "-" if row["bleu"] is None else f"{row['bleu']:.4f}"
            lines.append(
                f"| {name} | {variant} | {measured['wall']:.2f} | {measured['rss_mib']:.0f} | "
                f"{row['self_bleu']:.4f} | {bleu} |"
            )
            print(lines[-1], file=sys.stderr, flush=True)
    return "\n".join(lines)


# --- timing ------------------------------------------------------------------------------


def time_command(cmd, json_path: Path, repeats: int):
    """Median wall seconds of ``repeats`` runs of cmd, and the row it wrote as JSON."""
    walls = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
        walls.append(time.perf_counter() - start)
    row = next(iter(json.loads(json_path.read_text()).values()))
    return statistics.median(walls), walls, row


def load_average() -> str:
    """The 1, 5 and 15 minute load averages."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--repeats", type=int, default=3, help="runs per command, for the median (default 3)"
    )
    p.add_argument(
        "--before-repeats",
        type=int,
        default=3,
        help="runs of the slow 'before' commands (default 3)",
    )
    p.add_argument("--only", choices=("before", "after"), help="time only these rows")
    p.add_argument(
        "--lengths", type=int, nargs="*", default=list(LENGTHS), help="mean hypothesis lengths"
    )
    p.add_argument("--workdir", type=Path, help="keep the data here (default: a temporary folder)")
    p.add_argument(
        "--scale",
        action="store_true",
        help="time and peak memory of --scale-lines lines, before/after",
    )
    p.add_argument(
        "--scale-lines",
        type=int,
        default=SCALE_LINES,
        help=f"lines of --scale's files (default {SCALE_LINES})",
    )
    p.add_argument(
        "--before-commit",
        default=BEFORE_COMMIT,
        help=f"the 'before' of --scale (default {BEFORE_COMMIT})",
    )
    args = p.parse_args(argv)

    tmp = tempfile.TemporaryDirectory() if args.workdir is None else None
    work = Path(tmp.name) if tmp else args.workdir
    work.mkdir(parents=True, exist_ok=True)
    if args.scale:
        print(f"# {os.cpu_count()} CPUs, load average {load_average()} at start", file=sys.stderr)
        print(scale(work, args.scale_lines, args.before_commit, args.only))
        print(f"# load average {load_average()} at end", file=sys.stderr)
        return 0
    cli = [sys.executable, "-m", "fairseq_divgen.scoring.cli"]
    variants = []
    if args.only in (None, "before"):
        before = [sys.executable, __file__, "--run-previous"]
        variants.append(("before: pairwise sacrebleu, 500-subset", before, [], args.before_repeats))
    if args.only in (None, "after"):
        variants.append(("after: default, every hypothesis", cli, [], args.repeats))
        variants.append(
            ("after: `--self-bleu-max 500`", cli, ["--self-bleu-max", "500"], args.repeats)
        )

    def log(text):
        print(text, file=sys.stderr, flush=True)

    log(f"# {os.cpu_count()} CPUs, load average {load_average()} at start")
    lines = [
        "| tokens per line | implementation | wall s (median) | runs (s) | self-BLEU | BLEU |",
        "|---|---|---|---|---|---|",
    ]
    for mean_len in args.lengths:
        hyps, refs = work / f"hyps{mean_len}.txt", work / f"refs{mean_len}.txt"
        if not hyps.exists():
            hyps.write_text("\n".join(synthetic_lines(N_LINES, mean_len, seed=1)) + "\n")
            refs.write_text("\n".join(synthetic_lines(N_LINES, mean_len, seed=2)) + "\n")
        for name, prefix, extra, repeats in variants:
            out = work / "scores.json"
            cmd = prefix + ["--hyps", str(hyps), "--refs", str(refs), "--json", str(out)] + extra
            median, walls, row = time_command(cmd, out, repeats)
            runs = ", ".join(f"{w:.2f}" for w in walls)
            lines.append(
                f"| ~{mean_len} | {name} | {median:.2f} | {runs} | {row['self_bleu']:.4f} | {row['bleu']:.4f} |"
            )
            log(lines[-1])
    log(f"# load average {load_average()} at end")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--run-previous":
        sys.path.insert(0, str(ROOT))
        sys.exit(_run_previous(sys.argv[2:]))
    sys.exit(main())
