"""Reading hypotheses and references: lines end at "\\n" only (as wc -l counts them),
and input that is not UTF-8 is an error that names the file and the line."""

from pathlib import Path

import pytest

from fairseq_divgen.scoring.read import read_generate_output, read_lines

# Characters that str.splitlines() breaks lines at, but "\n"-only readers (wc -l and
# sacrebleu) keep inside a line.
SEPARATORS = ["\u2028", "\u2029", "\u0085", "\x0c", "\x0b", "\x1c", "\x1d", "\x1e", "\r"]


def write(path: Path, lines, end="\n") -> Path:
    """The lines joined by "\\n" (and a final one), as UTF-8."""
    path.write_bytes(("\n".join(lines) + end).encode("utf-8"))
    return path


def test_read_lines_ends_lines_at_newline_only(tmp_path):
    lines = [f"a{sep}b" for sep in SEPARATORS] + ["", "\r", "last"]
    path = write(tmp_path / "h.txt", lines)
    assert path.read_bytes().count(b"\n") == len(lines)  # what wc -l counts
    assert read_lines(path) == lines
    # a last line without its "\n" is a line too
    assert read_lines(write(tmp_path / "n.txt", ["x", "y\u2028z"], end="")) == ["x", "y\u2028z"]


def test_generate_output_keeps_unicode_separators_and_carriage_returns_inside_lines(tmp_path):
    path = tmp_path / "gen.txt"
    path.write_bytes(
        "S-0\tx\nT-0\tone\u2028two\rthree\nH-0\t-0.1\tone\u2028two\rthree\n"
        "T-1\tfour\x0cfive\nH-1\t-0.2\tfour\x85five\n".encode("utf-8")
    )
    assert read_generate_output(path) == (
        ["one\u2028two\rthree", "four\x85five"],
        ["one\u2028two\rthree", "four\x0cfive"],
    )


def test_read_lines_names_the_file_and_the_line_that_is_not_utf8(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes("a b\ncaf\xe9 au lait\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"latin1.txt: line 2 is not UTF-8 \(byte 0xe9 at byte 4"):
        read_lines(path)
    path.write_bytes("H-0\t-1\tcaf\xe9\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"latin1.txt: line 1 is not UTF-8 \(byte 0xe9 at byte 11"):
        read_generate_output(path)
