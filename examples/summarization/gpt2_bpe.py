"""GPT-2 byte-level BPE for BART: encode text with fairseq's encoder; learn a tiny one.

    python gpt2_bpe.py encode ENCODER_JSON VOCAB_BPE --inputs A B --outputs A.bpe B.bpe
    python gpt2_bpe.py learn-tiny OUT_DIR TEXT [TEXT ...] [--merges 400]

``encode`` does what fairseq's examples/roberta/multiprocessing_bpe_encoder.py does in
the BART summarization recipe: each stripped line becomes the space-separated ids of
fairseq's GPT-2 encoder (empty lines stay empty). ``learn-tiny`` (smoke mode only)
writes encoder.json, vocab.bpe and dict.txt in the format of the published GPT-2 files,
learned from a small corpus: byte symbols plus a few hundred merges.
"""

import argparse
import json
import sys
from collections import Counter
from multiprocessing import Pool
from pathlib import Path

_encoder = None


def _init(encoder_json: str, vocab_bpe: str) -> None:
    global _encoder
    from fairseq.data.encoders.gpt2_bpe_utils import get_encoder

    _encoder = get_encoder(encoder_json, vocab_bpe)


def _encode_line(line: str) -> str:
    return " ".join(map(str, _encoder.encode(line.strip())))


def encode(encoder_json: str, vocab_bpe: str, inputs, outputs, workers: int) -> None:
    """Encode each input file line by line into the matching output file."""
    with Pool(workers, initializer=_init, initargs=(encoder_json, vocab_bpe)) as pool:
        for src, dst in zip(inputs, outputs):
            with open(src, encoding="utf-8") as f, open(dst, "w", encoding="utf-8") as out:
                for encoded in pool.imap(_encode_line, f, chunksize=256):
                    out.write(encoded + "\n")
            print(f"gpt2 bpe: {src} -> {dst}")


def learn_tiny(out_dir: Path, texts, n_merges: int) -> None:
    """Byte-level BPE files (GPT-2 format) with ``n_merges`` merges learned from ``texts``."""
    from fairseq.data.encoders.gpt2_bpe_utils import Encoder, bytes_to_unicode

    byte_sym = bytes_to_unicode()
    pattern = Encoder({}, []).pat  # GPT-2's pre-tokenization into words
    words = Counter()
    for path in texts:
        for line in Path(path).read_text(encoding="utf-8").splitlines():
            for piece in pattern.findall(line.strip()):
                words[tuple(byte_sym[b] for b in piece.encode("utf-8"))] += 1
    merges = []
    for _ in range(n_merges):
        pairs = Counter()
        for word, count in words.items():
            for pair in zip(word, word[1:]):
                pairs[pair] += count
        if not pairs:
            break
        best = max(pairs, key=lambda p: (pairs[p], p))
        merges.append(best)
        words = Counter({_merge(w, best): c for w, c in words.items()})
    symbols = list(byte_sym.values()) + ["".join(m) for m in merges]
    encoder = {s: i for i, s in enumerate(dict.fromkeys(symbols))}
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "encoder.json").write_text(json.dumps(encoder))
    (out_dir / "vocab.bpe").write_text(
        "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges), encoding="utf-8"
    )
    _init(str(out_dir / "encoder.json"), str(out_dir / "vocab.bpe"))
    counts = Counter(
        i
        for path in texts
        for line in open(path, encoding="utf-8")
        for i in _encoder.encode(line.strip())
    )
    ranked = sorted(encoder.values(), key=lambda i: (-counts[i], i))
    (out_dir / "dict.txt").write_text("".join(f"{i} {counts[i]}\n" for i in ranked))
    print(f"tiny GPT-2 BPE: {len(merges)} merges, {len(encoder)} symbols -> {out_dir}")


def _merge(word, pair):
    out, i = [], 0
    while i < len(word):
        if i + 1 < len(word) and (word[i], word[i + 1]) == pair:
            out.append(word[i] + word[i + 1])
            i += 2
        else:
            out.append(word[i])
            i += 1
    return tuple(out)


def main(argv=None) -> None:
    """Command-line entry: ``encode`` or ``learn-tiny``."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("encode")
    e.add_argument("encoder_json")
    e.add_argument("vocab_bpe")
    e.add_argument("--inputs", nargs="+", required=True)
    e.add_argument("--outputs", nargs="+", required=True)
    e.add_argument("--workers", type=int, default=4)
    t = sub.add_parser("learn-tiny")
    t.add_argument("out_dir", type=Path)
    t.add_argument("texts", nargs="+")
    t.add_argument("--merges", type=int, default=400)
    args = p.parse_args(argv)
    if args.cmd == "encode":
        if len(args.inputs) != len(args.outputs):
            p.error("--inputs and --outputs need the same number of files")
        encode(args.encoder_json, args.vocab_bpe, args.inputs, args.outputs, args.workers)
    else:
        learn_tiny(args.out_dir, args.texts, args.merges)


if __name__ == "__main__":
    sys.exit(main())
