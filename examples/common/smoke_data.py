"""Tiny corpora for the recipes' smoke mode, written in each public source's own format.

    python smoke_data.py iwslt14 DEST/de-en.tgz
    python smoke_data.py cnn_dm DEST/cnn_dm_v2.tgz        # also xsum, gigaword
    python smoke_data.py wikitext103 DEST/wikitext-103-v1.zip
    python smoke_data.py dailydialog DEST/ijcnlp_dailydialog.zip

Each command writes the archive that the full run downloads, with the same member
names and line formats (but a made-up language and a few hundred lines), so smoke
mode runs the same extraction and preparation code as a full run. Deterministic.
"""

import io
import random
import sys
import tarfile
import zipfile
from pathlib import Path

SYLLABLES = ["ka", "lo", "mi", "ne", "ru", "sa", "ti", "vo", "ze", "po", "da", "fe", "gu", "hi"]


class Language:
    """A first-order Markov chain over made-up words (a few frequent, many rare)."""

    def __init__(self, seed: int, size: int = 80):
        rng = random.Random(seed)
        words = sorted({rng.choice(SYLLABLES) + rng.choice(SYLLABLES) for _ in range(size * 3)})
        self.words = words[:size]
        self.next = {w: rng.sample(self.words, 6) for w in self.words}
        self.rng = rng

    def words_of_sentence(self, lo: int, hi: int):
        """A random word sequence of length in [lo, hi]."""
        w = self.rng.choice(self.words[:20])
        out = [w]
        for _ in range(self.rng.randint(lo, hi) - 1):
            w = self.rng.choice(self.next[w][: self.rng.choice((2, 6))])
            out.append(w)
        return out

    def sentence(self, lo: int = 4, hi: int = 12, tokenized: bool = False) -> str:
        """A capitalised sentence with final punctuation (space-separated if tokenized)."""
        words = self.words_of_sentence(lo, hi)
        words[0] = words[0].capitalize()
        end = self.rng.choice([".", ".", "?", "!"])
        return " ".join(words) + (" " + end if tokenized else end)


def to_german(sentence: str) -> str:
    """The smoke 'German' side: every word reversed, order kept."""
    body, end = sentence[:-1], sentence[-1]
    return " ".join(w[::-1].lower() for w in body.split()).capitalize() + end


def _add(archive, name: str, text: str) -> None:
    data = text.encode("utf-8")
    if isinstance(archive, zipfile.ZipFile):
        archive.writestr(name, data)
    else:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))


def iwslt14(dest: Path) -> None:
    """de-en.tgz as fairseq's prepare-iwslt14.sh downloads it: tagged train, XML dev/test."""
    lang = Language(14)
    talks = [[lang.sentence() for _ in range(60)] for _ in range(8)]
    train = {"en": [], "de": []}
    for t, sents in enumerate(talks):
        for side in ("en", "de"):
            conv = (lambda s: s) if side == "en" else to_german
            train[side] += [
                f"<url>http://www.ted.com/talks/smoke_{t}.html</url>",
                f"<keywords>talks, smoke, {t}</keywords>",
                f"<talkid>{t}</talkid>",
                f"<title>{conv(lang.sentence(2, 4))}</title>",
                f"<description>TED Talk Subtitles and Transcript: {conv(lang.sentence())}</description>",
            ] + [conv(s) for s in sents]
    with tarfile.open(dest, "w:gz") as tgz:
        for side in ("en", "de"):
            _add(tgz, f"de-en/train.tags.de-en.{side}", "\n".join(train[side]) + "\n")
        for name in ("TED.dev2010", "TEDX.dev2012", "TED.tst2010", "TED.tst2011", "TED.tst2012"):
            sents = [lang.sentence() for _ in range(8)]
            sents[0] = sents[0][:-1] + " it’s."  # the curly quote fairseq's script normalises
            for side in ("en", "de"):
                conv = (lambda s: s) if side == "en" else to_german
                segs = [f'<seg id="{i + 1}"> {conv(s)} </seg>' for i, s in enumerate(sents)]
                xml = "\n".join(
                    [
                        '<?xml version="1.0" encoding="UTF-8"?>',
                        "<mteval>",
                        f'<refset setid="iwslt-{name}" srclang="german" trglang="english">',
                        '<doc docid="1" genre="lectures">',
                        "<talkid>1</talkid>",
                        *segs,
                        "</doc>",
                        "</refset>",
                        "</mteval>",
                    ]
                )
                _add(tgz, f"de-en/IWSLT14.{name}.de-en.{side}.xml", xml + "\n")


def _summaries(lang: Language, n: int, n_sents: int, lead: int, lower: bool = False):
    """Documents of ``n_sents`` sentences whose summary is their first ``lead`` ones."""
    src, tgt = [], []
    for _ in range(n):
        sents = [lang.sentence(5, 14) for _ in range(n_sents)]
        doc, summ = " ".join(sents), " ".join(sents[:lead])
        src.append(doc.lower() if lower else doc)
        tgt.append(summ.lower() if lower else summ)
    return src, tgt


SUMMARY_SIZES = (240, 16, 16)


def cnn_dm(dest: Path, folder: str = "cnn_cln") -> None:
    """cnn_dm_v2.tgz (folder cnn_cln/) or xsum.tar.gz (folder xsum/): SPLIT.source/.target."""
    lang = Language(7)
    with tarfile.open(dest, "w:gz") as tgz:
        for split, n in zip(("train", "val", "test"), SUMMARY_SIZES):
            for side, rows in zip(("source", "target"), _summaries(lang, n, 4, 1)):
                _add(tgz, f"{folder}/{split}.{side}", "".join(r + "\n" for r in rows))


def gigaword(dest: Path) -> None:
    """The Gigaword zip of the UniLM release: org_data/{train,dev,test}.{src,tgt}.txt."""
    lang = Language(8)
    with zipfile.ZipFile(dest, "w") as z:
        for split, n in zip(("train", "dev", "test"), SUMMARY_SIZES):
            src, tgt = _summaries(lang, n, 2, 1, lower=True)
            unk = "UNK" if split == "test" else "<unk>"  # as in the release
            src = [s.replace(" ", f" {unk} ", 1) if i % 5 == 0 else s for i, s in enumerate(src)]
            for side, rows in (("src", src), ("tgt", tgt)):
                _add(z, f"org_data/{split}.{side}.txt", "".join(r + "\n" for r in rows))


def wikitext103(dest: Path) -> None:
    """wikitext-103-v1.zip: wikitext-103/wiki.{train,valid,test}.tokens, headings and paragraphs."""
    lang = Language(103)
    with zipfile.ZipFile(dest, "w") as z:
        for split, n_articles in (("train", 30), ("valid", 3), ("test", 4)):
            lines = [" "]
            for _ in range(n_articles):
                lines += [f" = {' '.join(lang.words_of_sentence(1, 3))} = ", " "]
                for _ in range(4):
                    para = " ".join(lang.sentence(5, 14, tokenized=True) for _ in range(4))
                    lines += [f" {para} ", " "]
                lines += [f" = = {' '.join(lang.words_of_sentence(1, 2))} = = ", " "]
            _add(z, f"wikitext-103/wiki.{split}.tokens", "\n".join(lines) + "\n")


def dailydialog(dest: Path) -> None:
    """ijcnlp_dailydialog.zip with its nested train/validation/test zips and __eou__ turns."""
    lang = Language(17)
    outer = zipfile.ZipFile(dest, "w")
    everything = []
    for split, n in (("train", 120), ("validation", 10), ("test", 10)):
        dialogues, acts = [], []
        for _ in range(n):
            turns = [lang.sentence(3, 10, tokenized=True) for _ in range(lang.rng.randint(2, 7))]
            turns[0] = turns[0].replace(" ", " ’ s ", 1) if len(turns[0]) % 3 == 0 else turns[0]
            dialogues.append("".join(f"{t} __eou__ " for t in turns).rstrip() + "\n")
            acts.append("".join(f"{lang.rng.randint(1, 4)} " for _ in turns) + "\n")
        everything += dialogues
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as inner:
            inner.writestr(f"{split}/dialogues_{split}.txt", "".join(dialogues))
            inner.writestr(f"{split}/dialogues_act_{split}.txt", "".join(acts))
            inner.writestr(
                f"{split}/dialogues_emotion_{split}.txt", "".join(a.replace("4", "0") for a in acts)
            )
        outer.writestr(f"ijcnlp_dailydialog/{split}.zip", buf.getvalue())
    outer.writestr("ijcnlp_dailydialog/dialogues_text.txt", "".join(everything))
    outer.close()


WRITERS = {
    "iwslt14": iwslt14,
    "cnn_dm": cnn_dm,
    "xsum": lambda dest: cnn_dm(dest, folder="xsum"),
    "gigaword": gigaword,
    "wikitext103": wikitext103,
    "dailydialog": dailydialog,
}


def main(argv) -> None:
    """Command-line entry: ``smoke_data.py KIND ARCHIVE``."""
    if len(argv) != 2 or argv[0] not in WRITERS:
        sys.exit(__doc__)
    dest = Path(argv[1])
    dest.parent.mkdir(parents=True, exist_ok=True)
    WRITERS[argv[0]](dest)
    print(f"wrote the smoke {argv[0]} corpus: {dest}")


if __name__ == "__main__":
    main(sys.argv[1:])
