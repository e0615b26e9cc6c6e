"""Property tests: random Unicode lines (line and paragraph separators, form feeds,
carriage returns, combining marks, empty lines, duplicates) written to files, read by
divgen-score. It must read exactly the lines ``wc -l`` counts, and its BLEU and
self-BLEU must equal sacrebleu's on those lines."""

import json
import tempfile
from pathlib import Path

import sacrebleu
from hypothesis import given, settings
from hypothesis import strategies as st
from sacrebleu.metrics import BLEU

from fairseq_divgen.scoring.cli import main as divgen_score
from fairseq_divgen.scoring.read import read_generate_output, read_lines

# Bounded, and no example database written into the checkout.
SETTINGS = settings(max_examples=60, deadline=None, database=None)

PIECES = [
    "the",
    "cat",
    "sat",
    "a",
    "b",
    ".",
    ",",
    "-",
    "1.5",
    "&amp;",
    "日本",
    "é",
    "e\u0301",
    "\u0301",
    "\u2028",
    "\u2029",
    "\u0085",
    "\x0c",
    "\x0b",
    "\x1c",
    "\x1d",
    "\x1e",
    "\r",
    " ",
    "  ",
    "\t",
    "\u00a0",
    "\u3000",
]
ANY_CHAR = st.characters(blacklist_categories=("Cs",), blacklist_characters="\n")
LINE = st.lists(st.sampled_from(PIECES) | st.text(ANY_CHAR, max_size=3), max_size=8).map("".join)
# Lines drawn from a few distinct ones: duplicates, and n-grams that the lines share.
LINES = st.lists(LINE, min_size=1, max_size=5).flatmap(
    lambda distinct: st.lists(st.sampled_from(distinct), min_size=1, max_size=9)
)
TOKENIZERS = st.sampled_from(["13a", "none", "intl", "char"])


def write_lines(path: Path, lines) -> Path:
    """One line per text, each ended by "\\n", as UTF-8."""
    path.write_bytes("".join(line + "\n" for line in lines).encode("utf-8"))
    return path


def score(argv, folder: Path) -> dict:
    """divgen-score's row for its only input, through --json."""
    out = folder / "s.json"
    assert divgen_score([str(a) for a in argv] + ["--json", str(out)]) == 0
    return next(iter(json.loads(out.read_text()).values()))


def pairwise_self_bleu(hyps, tokenize):
    """The definition: mean sacrebleu sentence BLEU of each hypothesis with every
    other hypothesis (by index) as a reference; 0 for fewer than 2."""
    if len(hyps) < 2:
        return 0.0
    bleu = BLEU(tokenize=tokenize, effective_order=True)
    scores = [bleu.sentence_score(h, hyps[:i] + hyps[i + 1 :]).score for i, h in enumerate(hyps)]
    return sum(scores) / len(scores)


@SETTINGS
@given(lines=LINES)
def test_divgen_score_reads_exactly_the_lines_wc_counts(lines):
    with tempfile.TemporaryDirectory() as tmp:
        path = write_lines(Path(tmp) / "h.txt", lines)
        wc_l = path.read_bytes().count(b"\n")  # what wc -l counts
        assert read_lines(path) == lines
        assert score(["--hyps", path, "--tokenize", "none"], Path(tmp))["n"] == wc_l == len(lines)


@SETTINGS
@given(hyps=LINES, other_refs=st.lists(LINE, min_size=9, max_size=9), tokenize=TOKENIZERS)
def test_divgen_score_bleu_and_self_bleu_equal_sacrebleus(hyps, other_refs, tokenize):
    refs = [r if i % 2 else h for i, (h, r) in enumerate(zip(hyps, other_refs))]  # some match
    with tempfile.TemporaryDirectory() as tmp:
        h = write_lines(Path(tmp) / "h.txt", hyps)
        r = write_lines(Path(tmp) / "r.txt", refs)
        row = score(["--hyps", h, "--refs", r, "--tokenize", tokenize], Path(tmp))
    assert row["n"] == len(hyps)
    expected = sacrebleu.corpus_bleu(hyps, [refs], tokenize=tokenize).score
    assert abs(row["bleu"] - expected) <= 1e-9
    assert abs(row["self_bleu"] - pairwise_self_bleu(hyps, tokenize)) <= 1e-9


@SETTINGS
@given(hyps=LINES, tokenize=TOKENIZERS)
def test_generate_output_bleu_equals_sacrebleus(hyps, tokenize):
    # fairseq-generate prints one S-, T-, H-, D- and P- line per sentence, tab-separated;
    # the texts keep their separators (and carriage returns) inside the line.
    refs = [h if i % 2 else r for i, (h, r) in enumerate(zip(hyps, reversed(hyps)))]
    text = "".join(
        f"S-{i}\tsource {i}\nT-{i}\t{r}\nH-{i}\t-0.5\t{h}\nD-{i}\t-0.5\t{h}\nP-{i}\t-0.5\n"
        for i, (h, r) in enumerate(zip(hyps, refs))
    )
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "generate-test.txt"
        path.write_bytes(text.encode("utf-8"))
        assert read_generate_output(path) == (hyps, refs)
        row = score([path, "--tokenize", tokenize], Path(tmp))
    assert row["n"] == len(hyps)
    expected = sacrebleu.corpus_bleu(hyps, [refs], tokenize=tokenize).score
    assert abs(row["bleu"] - expected) <= 1e-9
