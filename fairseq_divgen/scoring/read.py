"""Read hypotheses and references from fairseq-generate output or plain text files.

Lines end at "\\n" only, as ``wc -l`` counts them and as sacrebleu reads files
(``newline="\\n"``): U+2028, U+2029, U+0085, form feed, vertical tab and a lone "\\r"
are characters of a line, not line breaks (``str.splitlines`` would break at all of
them). A last line without a final "\\n" is a line too. Files must be UTF-8.
"""

import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple


class InputError(ValueError):
    """An input file that cannot be scored; the message names the file and the fix."""


# fairseq-generate prints every hypothesis as "H-<id>\t<score>\t<text>" (D- the same).
_SCORE = r"[-+]?([0-9]*\.?[0-9]+([eE][-+]?[0-9]+)?|inf|nan)"
_GENERATE_HYPOTHESIS = re.compile(rf"[HD]-[0-9]+\t{_SCORE}\t")


def iter_lines(path: Path, what: str = "") -> Iterator[str]:
    """The lines of a UTF-8 file, without their "\\n", split on "\\n" only.
    ``what`` (e.g. "--refs") prefixes the file's name in error messages."""
    name = f"{what} {path}".strip()
    try:
        with open(path, "rb") as f:  # binary: iteration splits on b"\n" and nothing else
            for lineno, raw in enumerate(f, 1):
                if raw.endswith(b"\n"):
                    raw = raw[:-1]
                try:
                    yield raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    raise InputError(_not_utf8_message(name, path, lineno, raw, e)) from None
    except OSError as e:
        raise InputError(f"{name}: cannot read it ({e.strerror})") from None


def _not_utf8_message(
    name: str, path: Path, lineno: int, raw: bytes, error: UnicodeDecodeError
) -> str:
    """Where the first byte that is not UTF-8 is, and how to convert the file."""
    return (
        f"{name}: line {lineno} is not UTF-8 (byte 0x{raw[error.start]:02x} at byte "
        f"{error.start + 1} of the line); convert the file to UTF-8 first, e.g. "
        f"iconv -f latin1 -t utf-8 '{path}' > converted.txt"
    )


def read_lines(path: Path, what: str = "") -> List[str]:
    """One text per line (lines split on "\\n" only, see the module docstring)."""
    return list(iter_lines(path, what))


def generate_output_line(lines: List[str]) -> Optional[int]:
    """The number (from 1) of the first line that fairseq-generate prints for a
    hypothesis (``H-<id>\\t<score>\\t``, or D-), or None: text with such a line is
    fairseq-generate output, not plain hypotheses."""
    for lineno, line in enumerate(lines, 1):
        if line[:2] in ("H-", "D-") and _GENERATE_HYPOTHESIS.match(line):
            return lineno
    return None


@dataclass
class GenerateOutput:
    """What a fairseq-generate output holds: its hypotheses in sentence-id order,
    their references (None unless every hypothesis has one), and what is missing."""

    hyps: List[str]
    refs: Optional[List[str]]
    ids: List[int]  # sentence id of each hypothesis
    ids_without_ref: List[int] = field(default_factory=list)  # an H- line but no T- line
    ids_without_hyp: List[int] = field(default_factory=list)  # absent from 0..max id, or T-/S- only
    max_id: int = -1


def read_generate(path: Path, all_nbest: bool = False, detok: bool = False) -> GenerateOutput:
    """Hypotheses (and references, from T- lines) of a fairseq-generate output.

    Lines may come in any order; they are sorted by sentence id. With ``--nbest``
    > 1, fairseq prints a sentence's hypotheses best first: by default only the
    first is kept; ``all_nbest`` keeps them all (each paired with its sentence's
    reference). ``detok`` reads the D- (detokenized) lines instead of H-.
    """
    hyp_tag = "D" if detok else "H"
    hyps: Dict[int, List[str]] = defaultdict(list)
    refs: Dict[int, str] = {}
    seen_ids = set()
    for line in iter_lines(path):
        tag, _, rest = line.partition("-")
        if tag not in (hyp_tag, "T", "S") or "\t" not in rest:
            continue
        sid, _, payload = rest.partition("\t")
        if not sid.isdigit():
            continue
        seen_ids.add(int(sid))
        if tag == "T":
            refs[int(sid)] = payload
        elif tag == hyp_tag:
            _score, _, text = payload.partition("\t")
            hyps[int(sid)].append(text)
    if not hyps:
        raise InputError(
            f"{path}: no {hyp_tag}- lines of fairseq-generate output (a file given without "
            f"--hyps is read as fairseq-generate output); for plain text, one hypothesis "
            f"per line, give it as --hyps {path}"
        )
    out = GenerateOutput([], [], [], max_id=max(seen_ids))
    for sid in sorted(hyps):
        chosen = hyps[sid] if all_nbest else hyps[sid][:1]
        out.hyps.extend(chosen)
        out.ids.extend([sid] * len(chosen))
        if sid in refs:
            out.refs.extend([refs[sid]] * len(chosen))
        else:
            out.ids_without_ref.append(sid)
    out.ids_without_hyp = [i for i in range(out.max_id + 1) if i not in hyps]
    if out.ids_without_ref:
        out.refs = None
    return out


def read_generate_output(
    path: Path, all_nbest: bool = False, detok: bool = False
) -> Tuple[List[str], Optional[List[str]]]:
    """Hypotheses and references (None if a hypothesis has no T- line) of a
    fairseq-generate output; see :func:`read_generate`."""
    out = read_generate(path, all_nbest, detok)
    return out.hyps, out.refs
