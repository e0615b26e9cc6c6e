"""DailyDialog as context -> response pairs, one pair per line of two parallel files.

    python prepare_dailydialog.py EXTRACTED_DIR OUT_DIR [--context-turns 3]

EXTRACTED_DIR is where ijcnlp_dailydialog.zip was unpacked: it holds
ijcnlp_dailydialog/{train,validation,test}.zip, each with {split}/dialogues_{split}.txt,
one dialogue per line, every turn followed by ``__eou__`` (Li et al., IJCNLP 2017).
Each turn after the first gives one example: the response is that turn, the context
the (at most) ``--context-turns`` turns before it, joined by `` __eou__ ``. The text is
kept as released (tokenized, cased), with ’ written ' and spaces collapsed.
Writes OUT_DIR/{train,valid,test}.{context,response}.
"""

import argparse
import sys
import zipfile
from pathlib import Path

SPLITS = {"train": "train", "valid": "validation", "test": "test"}
EOU = "__eou__"


def dialogues(inner_zip: Path, split: str):
    """The turns of every dialogue of one split, read from its zip."""
    member = f"{split}/dialogues_{split}.txt"
    with zipfile.ZipFile(inner_zip) as z:
        if member not in z.namelist():
            sys.exit(f"error: {inner_zip} has no {member}")
        text = z.read(member).decode("utf-8")
    out = []
    for line in text.splitlines():
        turns = [" ".join(t.replace("\u2019", "'").split()) for t in line.split(EOU)]
        turns = [t for t in turns if t]
        if turns:
            out.append(turns)
    return out


def pairs(turn_lists, context_turns: int):
    """(context, response) for every turn that has at least one turn before it."""
    out = []
    for turns in turn_lists:
        for i in range(1, len(turns)):
            context = f" {EOU} ".join(turns[max(0, i - context_turns) : i])
            out.append((context, turns[i]))
    return out


def main(argv=None) -> None:
    """Write the context/response files of the three splits."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("extracted", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("--context-turns", type=int, default=3)
    args = p.parse_args(argv)
    if args.context_turns < 1:
        p.error("--context-turns must be at least 1")
    hits = sorted(args.extracted.rglob("validation.zip"))
    if not hits:
        sys.exit(
            f"error: no validation.zip under {args.extracted}; is it the unpacked ijcnlp_dailydialog.zip?"
        )
    folder = hits[0].parent
    args.out.mkdir(parents=True, exist_ok=True)
    for ours, theirs in SPLITS.items():
        dialog = dialogues(folder / f"{theirs}.zip", theirs)
        rows = pairs(dialog, args.context_turns)
        (args.out / f"{ours}.context").write_text(
            "".join(c + "\n" for c, _ in rows), encoding="utf-8"
        )
        (args.out / f"{ours}.response").write_text(
            "".join(r + "\n" for _, r in rows), encoding="utf-8"
        )
        print(f"DailyDialog {theirs}: {len(dialog)} dialogues -> {len(rows)} pairs")


if __name__ == "__main__":
    main(sys.argv[1:])
