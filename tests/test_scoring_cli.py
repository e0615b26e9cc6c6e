"""divgen-score on bad input: lines split on "\\n" only, files it must not read as
something else, errors (never tracebacks) found before any scoring, and inputs that
stay byte-identical. Most checks call main() in-process; two run the console entry."""

import json
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import sacrebleu

import fairseq_divgen.scoring.cli as cli
from fairseq_divgen.scoring.cli import main as divgen_score

ROOT = Path(__file__).resolve().parent.parent

# Six lines by wc -l; three of them hold a line or paragraph separator.
SIX_LINES = [
    "the cat sat on the mat",
    "a dog\u2028ran far away from home",
    "the quick brown fox jumps",
    "over\u2029the lazy dog today",
    "we went\u2028to the market",
    "it was a sunny day",
]


def write(path: Path, lines, end="\n") -> Path:
    """The lines joined by "\\n" (and a final one), as UTF-8."""
    path.write_bytes(("\n".join(lines) + end).encode("utf-8"))
    return path


def run(argv, capsys):
    """divgen-score's exit status, stdout and stderr."""
    try:
        code = divgen_score([str(a) for a in argv])
    except SystemExit as e:
        code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err


def snapshot(*paths):
    """The bytes of each file (None for a folder or no file)."""
    return {p: p.read_bytes() if p.is_file() else None for p in paths}


@pytest.fixture
def no_scoring(monkeypatch):
    """score_texts fails the test if it is called: the checks come before any scoring."""

    def scoring_started(*args, **kwargs):
        raise AssertionError("scoring started before every check was done")

    monkeypatch.setattr(cli, "score_texts", scoring_started)


# --- lines end at "\n" only --------------------------------------------------------------


def test_hypotheses_with_unicode_separators_stay_paired_with_their_references(tmp_path, capsys):
    # The same six texts, a separator in a different line of each file: both have 7
    # lines for str.splitlines(), paired wrongly from the second on. sacrebleu (and
    # its tokenizers) take a separator for a space: BLEU 100.
    texts = [line.replace("\u2028", " ").replace("\u2029", " ") for line in SIX_LINES]
    hyps_lines = texts[:1] + [texts[1].replace("dog ", "dog\u2028")] + texts[2:]
    refs_lines = texts[:4] + [texts[4].replace("went ", "went\u2028")] + texts[5:]
    hyps = write(tmp_path / "h.txt", hyps_lines)
    refs = write(tmp_path / "r.txt", refs_lines)
    out = tmp_path / "s.json"
    code, _, _ = run(["--hyps", hyps, "--refs", refs, "--json", out], capsys)
    assert code == 0
    row = json.loads(out.read_text())[str(hyps)]
    assert row["n"] == 6 == hyps.read_bytes().count(b"\n")
    expected = sacrebleu.corpus_bleu(hyps_lines, [refs_lines]).score
    assert expected == pytest.approx(100.0)
    assert row["bleu"] == pytest.approx(expected, abs=1e-9)
    assert row["wrep_16"] == 0.0  # every token sits where its reference token does


# --- files that must not be read as something else -----------------------------------------

GENERATE_OUTPUT = """S-1\tw1 w2
T-1\tv2 v1 v4 v5 v6
H-1\t-0.5\tv2 v1 v4 v5 v6
D-1\t-0.5\tv2 v1 v4 v5 v6
P-1\t-0.5 -0.5 -0.5 -0.5 -0.5
S-0\tw3
T-0\tv3 v7 v8 v9
H-0\t-0.1\tv3 v7 v8 v9
D-0\t-0.1\tv3 v7 v8 v9
P-0\t-0.1 -0.1 -0.1 -0.1
Generate test with beam=1: BLEU4 = 0.00
"""


def test_hyps_takes_one_file_and_a_generate_output_after_it_is_read_as_one(tmp_path, capsys):
    plain = write(tmp_path / "plain.txt", ["a b c", "d e f", "g h i"])
    gen = tmp_path / "generate-test.txt"
    gen.write_text(GENERATE_OUTPUT)
    out = tmp_path / "s.json"
    code, _, err = run(["--hyps", plain, gen, "--json", out], capsys)
    assert code == 0
    rows = json.loads(out.read_text())
    assert rows[str(plain)]["n"] == 3
    assert rows[str(gen)]["n"] == 2 and rows[str(gen)]["bleu"] == pytest.approx(100.0)
    assert f"{gen}: fairseq-generate output, 2 hypotheses" in err  # said in the output


def test_generate_output_given_as_hyps_is_an_error(tmp_path, capsys):
    gen = tmp_path / "generate-test.txt"
    gen.write_text(GENERATE_OUTPUT)
    code, out, err = run(["--hyps", gen, "--json", tmp_path / "s.json"], capsys)
    assert code == 1 and out == ""
    assert f"--hyps {gen} looks like fairseq-generate output" in err
    assert "without --hyps" in err and "Traceback" not in err
    assert not (tmp_path / "s.json").exists()


def test_plain_text_given_as_generate_output_is_an_error(tmp_path, capsys):
    plain = write(tmp_path / "plain.txt", ["a b c", "d e f"])
    code, _, err = run([plain], capsys)
    assert code == 1
    assert f"{plain}: no H- lines of fairseq-generate output" in err and f"--hyps {plain}" in err


def test_missing_reference_lines_and_dropped_sentence_ids_are_reported(tmp_path, capsys):
    gen = tmp_path / "gen.txt"  # ids 0..4: no H- line for 3, no T- line for 1
    gen.write_text(
        "T-0\ta b\nH-0\t-1\ta b\nH-1\t-1\tc d\nT-2\te f\nH-2\t-1\te f\n"
        "S-3\tq\nT-3\tg h\nT-4\ti j\nH-4\t-1\ti j\n"
    )
    out = tmp_path / "s.json"
    code, _, err = run([gen, "--json", out], capsys)
    assert code == 0
    assert "1 of 4 hypotheses have no reference (no T- line for id 1)" in err
    assert "no H- line for id 3 of the sentence ids 0..4" in err
    assert json.loads(out.read_text())[str(gen)]["bleu"] is None


def test_empty_hypothesis_file_is_an_error(tmp_path, capsys):
    empty = tmp_path / "h.txt"
    empty.write_bytes(b"")
    code, out, err = run(["--hyps", empty, "--json", tmp_path / "s.json"], capsys)
    assert code == 1 and out == ""
    assert f"--hyps {empty} is empty" in err
    assert not (tmp_path / "s.json").exists()


def test_references_that_do_not_pair_up_are_an_input_error(tmp_path, capsys):
    hyps = write(tmp_path / "h.txt", ["a", "b", "c"])
    refs = write(tmp_path / "r.txt", ["a\u2028b", "c"])  # 2 lines, 3 for splitlines()
    code, _, err = run(["--hyps", hyps, "--refs", refs], capsys)
    assert code == 1
    assert f"--refs {refs} has 2 lines but --hyps {hyps} has 3" in err


# --- command-line errors: exit 2, before any scoring -----------------------------------------


@pytest.mark.parametrize("window", ["0", "-3"])
def test_window_below_one_is_a_usage_error(tmp_path, capsys, no_scoring, window):
    hyps = write(tmp_path / "h.txt", ["a b a b"])
    code, _, err = run(["--hyps", hyps, "--window", window], capsys)
    assert code == 2 and "--window" in err and "at least 1" in err


def test_unknown_tokenizer_is_a_usage_error(tmp_path, capsys, no_scoring):
    hyps = write(tmp_path / "h.txt", ["a b"])
    code, _, err = run(["--hyps", hyps, "--tokenize", "bogus"], capsys)
    assert code == 2
    assert "--tokenize bogus: not a sacrebleu tokenizer" in err and "13a" in err


@pytest.mark.parametrize(
    "case", ["missing --refs", "--refs folder", "--hyps folder", "generate folder"]
)
def test_missing_files_and_folders_are_usage_errors_that_say_which(
    tmp_path, capsys, no_scoring, case
):
    hyps = write(tmp_path / "h.txt", ["a b"])
    folder = tmp_path / "folder"
    folder.mkdir()
    argv, expected = {
        "missing --refs": (
            ["--hyps", hyps, "--refs", tmp_path / "nope.txt"],
            f"--refs {tmp_path / 'nope.txt'}: no such file",
        ),
        "--refs folder": (["--hyps", hyps, "--refs", folder], f"--refs {folder} is a folder"),
        "--hyps folder": (["--hyps", folder], f"--hyps {folder} is a folder"),
        "generate folder": ([folder], f"{folder} (fairseq-generate output) is a folder"),
    }[case]
    code, _, err = run(argv, capsys)
    assert code == 2 and expected in err


def test_json_into_a_missing_folder_is_refused_before_scoring(tmp_path, capsys, no_scoring):
    hyps = write(tmp_path / "h.txt", ["a b"])
    target = tmp_path / "no" / "such" / "s.json"
    code, _, err = run(["--hyps", hyps, "--json", target], capsys)
    assert code == 2
    assert f"the folder {target.parent} does not exist" in err and "mkdir -p" in err


@pytest.mark.parametrize("which", ["--hyps", "--refs", "generate output"])
def test_json_onto_an_input_is_refused_and_the_inputs_stay_byte_identical(tmp_path, capsys, which):
    hyps = write(tmp_path / "h.txt", SIX_LINES)
    refs = write(tmp_path / "r.txt", SIX_LINES)
    gen = tmp_path / "gen.txt"
    gen.write_text(GENERATE_OUTPUT)
    target = {"--hyps": hyps, "--refs": refs, "generate output": gen}[which]
    before = snapshot(hyps, refs, gen)
    code, out, err = run([gen, "--hyps", hyps, "--refs", refs, "--json", target], capsys)
    assert code == 2 and out == ""
    assert f"--json {target} is the input" in err and "choose another --json path" in err
    assert snapshot(hyps, refs, gen) == before


# --- input-file errors: exit 1, before any scoring -------------------------------------------


@pytest.mark.parametrize("which", ["--hyps", "--refs", "generate output"])
def test_input_that_is_not_utf8_is_an_error_naming_the_file_and_line(tmp_path, capsys, which):
    good = write(tmp_path / "good.txt", ["a b", "c d"])
    bad = tmp_path / "latin1.txt"
    text = "H-0\t-1\tcaf\xe9\n" if which == "generate output" else "a b\ncaf\xe9\n"
    bad.write_bytes(text.encode("latin-1"))
    argv = {
        "--hyps": ["--hyps", bad],
        "--refs": ["--hyps", good, "--refs", bad],
        "generate output": [bad],
    }[which]
    before = snapshot(good, bad)
    code, _, err = run(argv, capsys)
    assert code == 1
    line = 1 if which == "generate output" else 2
    assert f"{bad}: line {line} is not UTF-8 (byte 0xe9" in err and "iconv" in err
    assert snapshot(good, bad) == before


def test_input_errors_are_found_before_any_file_is_scored(tmp_path, capsys, no_scoring):
    gen = tmp_path / "gen.txt"  # fine, and first: old versions scored it, then failed
    gen.write_text(GENERATE_OUTPUT)
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("caf\xe9\n".encode("latin-1"))
    code, _, err = run([gen, "--hyps", bad], capsys)
    assert code == 1 and "is not UTF-8" in err


# --- writing the JSON -----------------------------------------------------------------------


def _python(args, **kwargs):
    """python -m fairseq_divgen.scoring.cli (the console entry) from this checkout."""
    path = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    env = dict(os.environ, PYTHONPATH=path)
    cmd = [sys.executable, "-m", "fairseq_divgen.scoring.cli"] + [str(a) for a in args]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, **kwargs)


def _small_file_limit():
    """In the child: files it writes stop at 64 bytes (a full disk, or a kill mid-write)."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails with EFBIG instead
    resource.setrlimit(resource.RLIMIT_FSIZE, (64, 64))


def test_interrupted_json_write_leaves_the_previous_file_whole(tmp_path):
    hyps = write(tmp_path / "h.txt", SIX_LINES)
    target = tmp_path / "s.json"
    target.write_text(json.dumps({"previous": "scores"}, indent=2) * 10)
    before = snapshot(hyps, target)
    result = _python(["--hyps", hyps, "--json", target], preexec_fn=_small_file_limit)
    assert snapshot(hyps, target) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["h.txt", "s.json"]  # no temp file
    assert result.returncode == 1, result.stderr
    assert f"cannot write --json {target}" in result.stderr and "Traceback" not in result.stderr


def test_console_entry_reads_what_wc_counts_and_errors_without_traceback(tmp_path):
    hyps = write(tmp_path / "h.txt", SIX_LINES)
    wc = subprocess.run(["wc", "-l", str(hyps)], capture_output=True, text=True, check=True)
    target = tmp_path / "s.json"
    result = _python(["--hyps", hyps, "--json", target])
    assert result.returncode == 0, result.stderr
    assert json.loads(target.read_text())[str(hyps)]["n"] == int(wc.stdout.split()[0]) == 6
    result = _python(["--hyps", hyps, "--refs", tmp_path / "missing.txt"])
    assert result.returncode == 2
    assert "missing.txt: no such file" in result.stderr and "Traceback" not in result.stderr
