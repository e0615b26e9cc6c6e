"""Untokenized one-line-per-sample summarization text from an extracted public release.

    python prepare_summarization.py DATASET EXTRACTED_DIR OUT_DIR

DATASET:
- cnn_dm, xsum: the releases used in fairseq's BART README (cnn_dm_v2.tgz, xsum.tar.gz):
  a folder holding {train,val,test}.{source,target}; ``val`` becomes ``valid``.
- gigaword: the UniLM release the TaiLr authors use: org_data/{train,dev,test}.{src,tgt}.txt;
  ``dev`` becomes ``valid``, and ``<unk>`` in train/dev is written ``UNK`` as in its test set.
Writes OUT_DIR/{train,valid,test}.{source,target}; no tokenization (BART's BPE follows).
"""

import sys
from pathlib import Path

SPLITS = {"train": "train", "valid": "val", "test": "test"}
GIGAWORD_SPLITS = {"train": "train", "valid": "dev", "test": "test"}


def find_folder(root: Path, marker: str) -> Path:
    """The folder under ``root`` that holds ``marker`` (the archives nest it differently)."""
    hits = sorted(p.parent for p in root.rglob(marker))
    if not hits:
        sys.exit(f"error: no {marker} under {root}; is it the extracted archive of this dataset?")
    return hits[0]


def read_pair(src: Path, tgt: Path, unk_to: str = ""):
    """Stripped lines of a source/target pair of files, checked to align."""
    lines = []
    for path in (src, tgt):
        text = path.read_text(encoding="utf-8").split("\n")
        if text and text[-1] == "":
            text.pop()
        if unk_to:
            text = [t.replace("<unk>", unk_to) for t in text]
        lines.append([" ".join(t.split()) for t in text])
    if len(lines[0]) != len(lines[1]):
        sys.exit(f"error: {src} has {len(lines[0])} lines, {tgt} has {len(lines[1])}")
    return lines


def main(argv) -> None:
    """Write OUT_DIR/{train,valid,test}.{source,target}."""
    if len(argv) != 3 or argv[0] not in ("cnn_dm", "xsum", "gigaword"):
        sys.exit(__doc__)
    dataset, root, out = argv[0], Path(argv[1]), Path(argv[2])
    out.mkdir(parents=True, exist_ok=True)
    if dataset == "gigaword":
        folder = find_folder(root, "train.src.txt")
        pairs = {
            ours: read_pair(
                folder / f"{theirs}.src.txt",
                folder / f"{theirs}.tgt.txt",
                unk_to="" if ours == "test" else "UNK",
            )
            for ours, theirs in GIGAWORD_SPLITS.items()
        }
    else:
        folder = find_folder(root, "train.source")
        pairs = {
            ours: read_pair(folder / f"{theirs}.source", folder / f"{theirs}.target")
            for ours, theirs in SPLITS.items()
        }
    for split, (src, tgt) in pairs.items():
        (out / f"{split}.source").write_text("".join(s + "\n" for s in src), encoding="utf-8")
        (out / f"{split}.target").write_text("".join(t + "\n" for t in tgt), encoding="utf-8")
    print(f"{dataset}: " + ", ".join(f"{s} {len(p[0])}" for s, p in pairs.items()) + f" -> {out}")


if __name__ == "__main__":
    main(sys.argv[1:])
