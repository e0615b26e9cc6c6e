"""The recipes' data preparation on small hand-written files in each release's format.

Expected outputs are written out here by hand from the format descriptions (fairseq's
prepare-iwslt14.sh, the DailyDialog and Gigaword releases), not computed by the code.
"""

import importlib.util
import io
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def script(relpath: str, *args, check=True):
    """Run an examples/ script with this interpreter."""
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / relpath), *map(str, args)], capture_output=True, text=True
    )
    if check:
        assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def read(path: Path):
    return path.read_text(encoding="utf-8").splitlines()


def test_iwslt14_cleaning_follows_fairseqs_script(tmp_path):
    orig = tmp_path / "de-en"
    orig.mkdir()
    de = [
        "<url>http://x</url>",
        "<keywords>a, b</keywords>",
        "<talkid>7</talkid>",
        "<title>Der Titel</title>",
        "<description>Eine Beschreibung</description>",
        "Ein Satz .",
        "zwei drei vier fünf sechs sieben",
        "",
        "Wort " * 176,
    ]
    en = [
        "<url>http://x</url>",
        "<keywords>a, b</keywords>",
        "<talkid>7</talkid>",
        "<title>The Title</title>",
        "<description>A Description</description>",
        "A sentence .",
        "two",
        "",
        "word " * 176,
    ]
    # 30 more good pairs, so that the 23rd kept pair goes to valid
    de += [f"Satz {i} hier" for i in range(30)]
    en += [f"Sentence {i} here" for i in range(30)]
    (orig / "train.tags.de-en.de").write_text("\n".join(de) + "\n", encoding="utf-8")
    (orig / "train.tags.de-en.en").write_text("\n".join(en) + "\n", encoding="utf-8")
    for name in ("TED.dev2010", "TEDX.dev2012", "TED.tst2010", "TED.tst2011", "TED.tst2012"):
        for lang, text in (("de", f"Test {name} Satz"), ("en", f"Test {name} it\u2019s")):
            (orig / f"IWSLT14.{name}.de-en.{lang}.xml").write_text(
                f'<mteval>\n<doc docid="1">\n<talkid>1</talkid>\n<seg id="1">  {text}  </seg>\n</doc>\n</mteval>\n',
                encoding="utf-8",
            )
    out = tmp_path / "text"
    script("translation/prepare_iwslt14.py", orig, out)
    # kept: title, description, "ein satz ." (the 1:6 and empty and 176-word pairs go), 30 more
    kept_en = ["the title", "a description", "a sentence ."] + [
        f"sentence {i} here" for i in range(30)
    ]
    assert read(out / "valid.en") == [kept_en[22]]
    assert read(out / "train.en") == kept_en[:22] + kept_en[23:]
    assert read(out / "train.de")[:3] == ["der titel", "eine beschreibung", "ein satz ."]
    assert read(out / "test.en") == [
        f"test {n.lower()} it's"
        for n in ("TED.dev2010", "TEDX.dev2012", "TED.tst2010", "TED.tst2011", "TED.tst2012")
    ]


def test_iwslt14_missing_file_is_named(tmp_path):
    (tmp_path / "de-en").mkdir()
    proc = script(
        "translation/prepare_iwslt14.py", tmp_path / "de-en", tmp_path / "out", check=False
    )
    assert proc.returncode != 0 and "train.tags.de-en.de" in proc.stderr


def _zip_bytes(members: dict) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, text in members.items():
            z.writestr(name, text)
    return buf.getvalue()


def test_dailydialog_context_response_pairs(tmp_path):
    folder = tmp_path / "orig" / "ijcnlp_dailydialog"
    folder.mkdir(parents=True)
    dialogue = "Hi , Tom ! __eou__ Hello . __eou__ It \u2019 s late . __eou__ Yes . __eou__\n"
    for split in ("train", "validation", "test"):
        (folder / f"{split}.zip").write_bytes(
            _zip_bytes({f"{split}/dialogues_{split}.txt": dialogue + "One . __eou__\n"})
        )
    out = tmp_path / "text"
    script("dialogue/prepare_dailydialog.py", tmp_path / "orig", out, "--context-turns", 2)
    assert read(out / "test.context") == [
        "Hi , Tom !",
        "Hi , Tom ! __eou__ Hello .",
        "Hello . __eou__ It ' s late .",
    ]
    assert read(out / "test.response") == ["Hello .", "It ' s late .", "Yes ."]
    assert read(out / "valid.response") == read(out / "test.response")


def test_gigaword_unk_and_split_names(tmp_path):
    org = tmp_path / "orig" / "org_data"
    org.mkdir(parents=True)
    for split in ("train", "dev", "test"):
        (org / f"{split}.src.txt").write_text(f"a <unk> {split} source\nsecond  line\n")
        (org / f"{split}.tgt.txt").write_text(f"{split} <unk> title\nsecond\n")
    out = tmp_path / "text"
    script("summarization/prepare_summarization.py", "gigaword", tmp_path / "orig", out)
    assert read(out / "train.source") == ["a UNK train source", "second line"]
    assert read(out / "valid.target") == ["dev UNK title", "second"]
    assert read(out / "test.target") == [
        "test <unk> title",
        "second",
    ]  # the test set is left as released


def test_cnn_dm_folder_is_found_and_val_becomes_valid(tmp_path):
    folder = tmp_path / "orig" / "cnn_cln"
    folder.mkdir(parents=True)
    for split in ("train", "val", "test"):
        (folder / f"{split}.source").write_text(f"{split} article one\n{split} two\n")
        (folder / f"{split}.target").write_text(f"{split} summary\n{split} two\n")
    (folder / "val.target").write_text("val summary\n")
    proc = script(
        "summarization/prepare_summarization.py",
        "cnn_dm",
        tmp_path / "orig",
        tmp_path / "text",
        check=False,
    )
    assert (
        proc.returncode != 0
        and "val.source has 2 lines" in proc.stderr
        and "val.target has 1" in proc.stderr
    )
    (folder / "val.target").write_text("val summary\nval two\n")
    script("summarization/prepare_summarization.py", "cnn_dm", tmp_path / "orig", tmp_path / "text")
    assert read(tmp_path / "text/valid.target") == ["val summary", "val two"]


def test_prefixes_skip_headings_and_short_paragraphs_then_cut(tmp_path):
    test = tmp_path / "wiki.test.tokens"
    test.write_text(
        " \n = Title = \n \n a b c d e f g \n short one \n = = Sec = = \n h i j k l m n o \n"
    )
    script(
        "language_model/prefixes.py",
        "make",
        test,
        tmp_path / "p",
        "--prefix-len",
        3,
        "--cont-len",
        4,
    )
    assert read(tmp_path / "p/prefix.tokens") == ["a b c", "h i j"]
    assert read(tmp_path / "p/continuation.ref") == ["d e f g", "k l m n"]
    gen = tmp_path / "gen.txt"
    gen.write_text(
        "S-1\th i j\nH-1\t-0.5\th i j x y z w\nH-0\t-0.2\ta b c q r s t\nINFO something\n"
    )
    script(
        "language_model/prefixes.py",
        "cut",
        gen,
        tmp_path / "p/continuation.ref",
        tmp_path / "c.txt",
        "--prefix-len",
        3,
    )
    assert read(tmp_path / "c.txt") == [
        "T-0\td e f g",
        "H-0\t-0.2\tq r s t",
        "T-1\tk l m n",
        "H-1\t-0.5\tx y z w",
    ]


def test_extract_refuses_members_outside_the_target(tmp_path):
    archive = tmp_path / "evil.tgz"
    with tarfile.open(archive, "w:gz") as t:
        data = b"x"
        info = tarfile.TarInfo("../outside.txt")
        info.size = len(data)
        t.addfile(info, io.BytesIO(data))
    proc = script("common/fetch.py", "extract", archive, tmp_path / "dest", check=False)
    assert proc.returncode != 0 and "outside" in proc.stderr
    assert not (tmp_path / "outside.txt").exists()


def test_rouge_wrapper_matches_hand_computed_f1():
    pytest.importorskip("rouge_score")
    spec = importlib.util.spec_from_file_location(
        "recipe_rouge", EXAMPLES / "summarization/rouge.py"
    )
    rouge = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(rouge)
    hyps = ["the cat sat", "a dog ran far"]
    refs = ["the cat sat on the mat", "a dog ran far"]
    got = rouge.rouge_scores(hyps, refs)
    # pair 1: unigram P=3/3, R=3/6; bigram P=2/2, R=2/5; LCS 3 -> same as unigram. Pair 2: all 1.
    f = lambda p, r: 2 * p * r / (p + r)  # noqa: E731
    assert got["rouge1"] == pytest.approx(100 * (f(1, 0.5) + 1) / 2)
    assert got["rouge2"] == pytest.approx(100 * (f(1, 0.4) + 1) / 2)
    assert got["rougeL"] == pytest.approx(100 * (f(1, 0.5) + 1) / 2)
    # two reference sentences for ROUGE-Lsum: "the cat sat." / "on the mat." -> union LCS 3 of 6
    got = rouge.rouge_scores(["the cat sat."], ["the cat sat. on the mat."])
    assert got["rougeLsum"] == pytest.approx(100 * f(1, 0.5))
