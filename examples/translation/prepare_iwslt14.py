"""IWSLT14 de-en train/valid/test text, with the cleaning of fairseq's prepare-iwslt14.sh.

    python prepare_iwslt14.py ORIG_DIR OUT_DIR     # ORIG_DIR: the extracted de-en/ folder

What fairseq's script does, and what this does instead of Moses:
- train: drop the <url>, <talkid> and <keywords> lines of train.tags.de-en.{de,en}, keep
  the text of <title> and <description> lines without the tags;
- drop pairs with an empty side, a side over 175 words or a length ratio over 1.5
  (Moses clean-corpus-n; fairseq counts Moses tokens, this counts whitespace words of
  the untokenized text);
- valid/test: the <seg> contents of the XML files, with ’ turned into ';
- lowercase everything; valid = every 23rd training pair, train = the rest;
- test = dev2010 + TEDX dev2012 + tst2010 + tst2011 + tst2012, in that order.
No Moses tokenization: the recipe segments raw text with sentencepiece.
"""

import re
import sys
from pathlib import Path

LANGS = ("de", "en")
TEST_SETS = ("TED.dev2010", "TEDX.dev2012", "TED.tst2010", "TED.tst2011", "TED.tst2012")
DROPPED_TAGS = ("<url>", "<talkid>", "<keywords>")
STRIPPED_TAGS = re.compile(r"</?(title|description)>")
SEG = re.compile(r'<seg id="?\d*"?>\s*(.*?)\s*</seg>')
MAX_WORDS, MAX_RATIO = 175, 1.5


def train_lines(path: Path):
    """Text lines of a train.tags file, as fairseq's grep/sed pipeline leaves them."""
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if any(tag in line for tag in DROPPED_TAGS):
            continue
        out.append(" ".join(STRIPPED_TAGS.sub("", line).split()))
    return out


def keep_pair(src: str, tgt: str) -> bool:
    """clean-corpus-n with ratio 1.5 and lengths 1..175 (in whitespace words)."""
    ns, nt = len(src.split()), len(tgt.split())
    if not (1 <= ns <= MAX_WORDS and 1 <= nt <= MAX_WORDS):
        return False
    return ns / nt <= MAX_RATIO and nt / ns <= MAX_RATIO


def xml_segments(path: Path):
    """The <seg> texts of an IWSLT XML file, with fairseq's quote normalisation."""
    text = path.read_text(encoding="utf-8")
    return [" ".join(m.group(1).replace("\u2019", "'").split()) for m in SEG.finditer(text)]


def main(argv) -> None:
    """Write OUT_DIR/{train,valid,test}.{de,en}."""
    if len(argv) != 2:
        sys.exit(__doc__)
    orig, out = Path(argv[0]), Path(argv[1])
    missing = [
        p
        for p in [orig / f"train.tags.de-en.{lang}" for lang in LANGS]
        + [orig / f"IWSLT14.{t}.de-en.{lang}.xml" for t in TEST_SETS for lang in LANGS]
        if not p.is_file()
    ]
    if missing:
        sys.exit(
            f"error: {orig} lacks {', '.join(p.name for p in missing)}; is it the de-en/ folder of de-en.tgz?"
        )
    de, en = (train_lines(orig / f"train.tags.de-en.{lang}") for lang in LANGS)
    if len(de) != len(en):
        sys.exit(f"error: train.tags.de-en.de has {len(de)} text lines, .en has {len(en)}")
    pairs = [(s.lower(), t.lower()) for s, t in zip(de, en) if keep_pair(s, t)]
    splits = {
        "train": [p for i, p in enumerate(pairs, 1) if i % 23 != 0],
        "valid": [p for i, p in enumerate(pairs, 1) if i % 23 == 0],
    }
    test = {
        lang: [
            s.lower()
            for t in TEST_SETS
            for s in xml_segments(orig / f"IWSLT14.{t}.de-en.{lang}.xml")
        ]
        for lang in LANGS
    }
    if len(test["de"]) != len(test["en"]):
        sys.exit(
            f"error: the test XML files hold {len(test['de'])} German and {len(test['en'])} English segments"
        )
    splits["test"] = list(zip(test["de"], test["en"]))
    out.mkdir(parents=True, exist_ok=True)
    for split, rows in splits.items():
        for k, lang in enumerate(LANGS):
            (out / f"{split}.{lang}").write_text(
                "".join(r[k] + "\n" for r in rows), encoding="utf-8"
            )
    print(
        f"IWSLT14 de-en: {len(de)} training lines, {len(pairs)} after cleaning; "
        + ", ".join(f"{s} {len(r)}" for s, r in splits.items())
    )


if __name__ == "__main__":
    main(sys.argv[1:])
