"""Train a sentencepiece model and apply it to text files (one sentence per line).

    python spm.py train MODEL_PREFIX VOCAB_SIZE FILE [FILE ...] [--user-symbol SYM ...]
    python spm.py encode MODEL.model IN OUT

``encode`` writes space-separated pieces, what fairseq-preprocess reads; fairseq's
``--post-process sentencepiece`` turns generated pieces back into text.
"""

import argparse
import sys


def train(prefix: str, vocab_size: int, inputs, user_symbols) -> None:
    """A joint BPE sentencepiece model over ``inputs`` (full character coverage)."""
    import sentencepiece as spm

    spm.SentencePieceTrainer.train(
        input=",".join(inputs),
        model_prefix=prefix,
        vocab_size=vocab_size,
        model_type="bpe",
        character_coverage=1.0,
        # a small corpus may not support the requested size: take what it has
        hard_vocab_limit=False,
        user_defined_symbols=list(user_symbols),
        input_sentence_size=4_000_000,
        shuffle_input_sentence=True,
        minloglevel=2,
    )


def encode(model: str, src: str, dst: str) -> None:
    """Write each line of ``src`` as space-separated pieces to ``dst``."""
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=model)
    with open(src, encoding="utf-8") as f, open(dst, "w", encoding="utf-8") as out:
        for line in f:
            out.write(" ".join(sp.encode(line.rstrip("\n"), out_type=str)) + "\n")


def main(argv=None) -> None:
    """Command-line entry: ``train`` or ``encode``."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train")
    t.add_argument("prefix")
    t.add_argument("vocab_size", type=int)
    t.add_argument("inputs", nargs="+")
    t.add_argument("--user-symbol", action="append", default=[])
    e = sub.add_parser("encode")
    e.add_argument("model")
    e.add_argument("src")
    e.add_argument("dst")
    args = p.parse_args(argv)
    if args.cmd == "train":
        train(args.prefix, args.vocab_size, args.inputs, args.user_symbol)
    else:
        encode(args.model, args.src, args.dst)


if __name__ == "__main__":
    sys.exit(main())
