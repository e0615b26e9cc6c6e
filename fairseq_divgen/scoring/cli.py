"""``divgen-score``: quality and diversity of generated text, as a table and JSON.

    divgen-score generate-test.txt                # fairseq-generate output
    divgen-score --hyps samples.txt [--refs ref.txt]

Lines end at "\\n" only (as ``wc -l`` counts them). Every flag, path and input file
is checked before any scoring starts. A problem is one line on stderr that names the
flag or file and the fix, with exit status 2 for the command line (a missing file, a
folder, an unknown tokenizer, a bad --window or --json path) and 1 for an input file
that cannot be scored (not UTF-8, empty, line counts that differ, the wrong format).

Self-BLEU is computed over every hypothesis by default; ``--self-bleu-max N`` scores
a seeded random subset of N instead (see fairseq_divgen/scoring/metrics.py).
"""

import argparse
import json
import math
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from .metrics import bleu_and_self_bleu, whitespace_metrics
from .read import InputError, generate_output_line, read_generate, read_lines

_IDS_SHOWN = 10  # sentence ids listed in a warning; the count is always complete


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
    if not hyps:
        raise ValueError("no hypotheses to score")
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


# --- the command line ----------------------------------------------------------------------


def _positive_int(text: str) -> int:
    """An integer >= 1 (argparse type)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value}: give a window of at least 1 token")
    return value


def _parser() -> argparse.ArgumentParser:
    """divgen-score's flags."""
    p = argparse.ArgumentParser(prog="divgen-score", description=__doc__.splitlines()[0])
    p.add_argument(
        "generate_outputs",
        nargs="*",
        type=Path,
        metavar="GENERATE_OUTPUT",
        help="fairseq-generate output files (their H- and T- lines)",
    )
    # One file per --hyps: a list flag would take the next file name too
    p.add_argument(
        "--hyps",
        type=Path,
        action="append",
        metavar="FILE",
        help="plain text, one hypothesis per line (lines end at \\n only); "
        "repeat --hyps for several files",
    )
    p.add_argument(
        "--refs", type=Path, metavar="FILE", help="plain text references for --hyps, one per line"
    )
    p.add_argument(
        "--all-nbest", action="store_true", help="score every n-best hypothesis, not only the first"
    )
    p.add_argument("--detok", action="store_true", help="read D- (detokenized) lines instead of H-")
    p.add_argument(
        "--window",
        type=_positive_int,
        default=16,
        help="l of rep/l and wrep/l, at least 1 (default 16)",
    )
    p.add_argument(
        "--self-bleu-max",
        type=int,
        metavar="N",
        help="self-BLEU of a random subset of N hypotheses (drawn with --seed, each scored "
        "against the other N-1) instead of every hypothesis against all the others, the "
        "default. A subset's self-BLEU is not comparable with the full set's (older versions "
        "of divgen-score used a subset of 500)",
    )
    p.add_argument(
        "--seed", type=int, default=0, help="seed of the --self-bleu-max subset (default 0)"
    )
    p.add_argument(
        "--tokenize",
        default="13a",
        help="sacrebleu tokenizer (default 13a; 'none' for pre-tokenized text)",
    )
    p.add_argument("--json", type=Path, help="also write the results here as JSON")
    return p


def _inputs(args) -> List[Tuple[str, Path]]:
    """Every input file with the flag it was given with ('' for fairseq-generate output)."""
    named = [("", path) for path in args.generate_outputs]
    named += [("--hyps", path) for path in args.hyps or []]
    if args.refs is not None:
        named.append(("--refs", args.refs))
    return named


def _check_command_line(p: argparse.ArgumentParser, args) -> None:
    """Every check that needs no reading of the inputs; p.error (exit 2) on the first failure."""
    if not args.generate_outputs and not args.hyps:
        p.error("give fairseq-generate output files or --hyps FILE")
    if args.self_bleu_max is not None and args.self_bleu_max < 2:
        p.error(
            "--self-bleu-max needs at least 2 hypotheses (self-BLEU scores each against the others)"
        )
    if args.refs is not None and len(args.hyps or []) != 1:
        p.error("--refs goes with exactly one --hyps file")
    _check_tokenizer(p, args.tokenize)
    for flag, path in _inputs(args):
        _check_input_path(p, flag, path)
    if args.json is not None:
        _check_json_path(p, args.json, _inputs(args))


def _check_tokenizer(p: argparse.ArgumentParser, tokenize: str) -> None:
    """The tokenizer is one of sacrebleu's and loads."""
    from sacrebleu.metrics import BLEU

    if tokenize not in BLEU.TOKENIZERS:
        names = ", ".join(sorted(BLEU.TOKENIZERS))
        p.error(f"--tokenize {tokenize}: not a sacrebleu tokenizer; choose one of {names}")
    try:
        BLEU(tokenize=tokenize)
    except Exception as e:  # a tokenizer whose own package is missing, for instance
        p.error(
            f"--tokenize {tokenize}: sacrebleu cannot load it ({type(e).__name__}: {e}); "
            "install what it needs or choose another tokenizer"
        )


def _check_input_path(p: argparse.ArgumentParser, flag: str, path: Path) -> None:
    """The input exists and is not a folder."""
    name = f"{flag} {path}" if flag else f"{path} (fairseq-generate output)"
    if path.is_dir():
        p.error(f"{name} is a folder, not a file; give a file in it")
    if not path.exists():
        p.error(f"{name}: no such file; check the path")


def _check_json_path(
    p: argparse.ArgumentParser, path: Path, inputs: List[Tuple[str, Path]]
) -> None:
    """--json can be written (its folder exists) and replaces no input file."""
    folder = path.parent
    if path.is_dir():
        p.error(f"--json {path} is a folder; give a file name, e.g. --json {path / 'scores.json'}")
    if not folder.is_dir():
        p.error(
            f"--json {path}: the folder {folder} does not exist; create it first "
            f"(mkdir -p {folder}) or choose another path"
        )
    if not os.access(folder, os.W_OK | os.X_OK):
        p.error(f"--json {path}: cannot write into the folder {folder}; choose another path")
    for flag, source in inputs:
        if _same_file(path, source):
            p.error(
                f"--json {path} is the input {flag or 'file'} {source}: writing the JSON "
                "would replace it; choose another --json path"
            )


def _same_file(a: Path, b: Path) -> bool:
    """Whether the two paths name one file (through links too)."""
    if a.exists() and b.exists():
        return os.path.samefile(a, b)
    return a.resolve() == b.resolve()


# --- reading the inputs ----------------------------------------------------------------


@dataclass
class _Input:
    """One row's texts, read and checked."""

    name: str
    hyps: List[str]
    refs: Optional[List[str]]


def _read_plain(path: Path, refs_path: Optional[Path]) -> _Input:
    """--hyps (and --refs): one text per line, as many references as hypotheses."""
    hyps = read_lines(path, "--hyps")
    if not hyps:
        raise InputError(f"--hyps {path} is empty: there is no hypothesis to score")
    _refuse_generate_output("--hyps", path, hyps)
    refs = None
    if refs_path is not None:
        refs = read_lines(refs_path, "--refs")
        _refuse_generate_output("--refs", refs_path, refs)
        if len(refs) != len(hyps):
            raise InputError(
                f"--refs {refs_path} has {len(refs)} lines but --hyps {path} has {len(hyps)} "
                "(lines end at \\n only); give one reference per hypothesis"
            )
    with_refs = f", {len(refs)} references from --refs {refs_path}" if refs is not None else ""
    _note(
        f"--hyps {path}: plain text, {_count(len(hyps), 'hypothesis', 'hypotheses')} "
        f"(one per line){with_refs}"
    )
    return _Input(str(path), hyps, refs)


def _refuse_generate_output(flag: str, path: Path, lines: List[str]) -> None:
    """Plain text that holds fairseq-generate's hypothesis lines is the wrong file."""
    lineno = generate_output_line(lines)
    if lineno is not None:
        raise InputError(
            f"{flag} {path} looks like fairseq-generate output (line {lineno} is one of its "
            f"H-/D- lines), not plain text; give it without {flag} to read its H- and T- lines"
        )


def _read_generate(path: Path, all_nbest: bool, detok: bool) -> _Input:
    """fairseq-generate output, with warnings for what it lacks."""
    gen = read_generate(path, all_nbest, detok)
    tag = "D" if detok else "H"
    which = "every n-best" if all_nbest else "the first of each sentence"
    _note(
        f"{path}: fairseq-generate output, {_count(len(gen.hyps), 'hypothesis', 'hypotheses')} "
        f"({tag}- lines, {which})"
    )
    if len(gen.ids_without_ref) == len(set(gen.ids)):
        _note(
            f"{path}: no T- line for any hypothesis, so no references: bleu and wrep are "
            "not computed ('-')"
        )
    elif gen.ids_without_ref:
        missing = set(gen.ids_without_ref)
        n_hyps = sum(sid in missing for sid in gen.ids)
        _note(
            f"warning: {path}: {n_hyps} of {len(gen.hyps)} hypotheses have no reference (no T- "
            f"line for {_id_list(gen.ids_without_ref)}): bleu and wrep are not computed ('-'); "
            "score the file that fairseq-generate wrote in full, or use --hyps and --refs"
        )
    if gen.ids_without_hyp:
        _note(
            f"warning: {path}: no {tag}- line for {_id_list(gen.ids_without_hyp)} of the "
            f"sentence ids 0..{gen.max_id}: fairseq-generate dropped them (e.g. "
            "--skip-invalid-size-inputs-valid-test) or the file is incomplete; they are not scored"
        )
    return _Input(str(path), gen.hyps, gen.refs)


def _count(n: int, one: str, many: str) -> str:
    """'1 hypothesis', '2 hypotheses'."""
    return f"{n} {one if n == 1 else many}"


def _id_list(ids: List[int]) -> str:
    """'id 7' or 'ids 3, 9, ... (25 ids)': the first few ids and how many there are."""
    shown = ", ".join(map(str, ids[:_IDS_SHOWN]))
    if len(ids) == 1:
        return f"id {shown}"
    more = f", ... ({len(ids)} ids)" if len(ids) > _IDS_SHOWN else ""
    return f"ids {shown}{more}"


def _note(text: str) -> None:
    """A line on stderr: what was read, or a warning (stdout holds the table)."""
    print(text, file=sys.stderr)


def _read_inputs(args) -> List[_Input]:
    """Every input, read and checked, in the order of the table's rows."""
    inputs = [_read_generate(path, args.all_nbest, args.detok) for path in args.generate_outputs]
    inputs += [_read_plain(path, args.refs) for path in args.hyps or []]
    return inputs


# --- writing -------------------------------------------------------------------------------


def _write_json_atomically(path: Path, rows: Dict[str, Dict[str, float]]) -> None:
    """The rows as JSON at ``path``, through a temporary file in its folder and a rename:
    an interrupted run leaves the old file (or none), never half of one."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(json.dumps(rows, indent=2))
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp's 0600 would hide the scores from others
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    """This process's umask (reading it means setting it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def main(argv=None) -> int:
    """Entry point of ``divgen-score``."""
    p = _parser()
    args = p.parse_args(argv)
    _check_command_line(p, args)
    try:
        inputs = _read_inputs(args)
    except InputError as e:
        _note(f"divgen-score: error: {e}")
        return 1
    rows = {}
    while inputs:
        row = inputs.pop(0)  # its texts are freed once scored
        rows[row.name] = score_texts(
            row.hyps, row.refs, args.window, args.self_bleu_max, args.seed, args.tokenize
        )
        del row
    print(markdown_table(rows))
    if args.json is not None:
        try:
            _write_json_atomically(args.json, rows)
        except OSError as e:
            _note(f"divgen-score: error: cannot write --json {args.json} ({e.strerror})")
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
