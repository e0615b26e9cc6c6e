"""``python -m fairseq_divgen.demo``: a small end-to-end run on data built on the spot.

Builds a toy translation corpus (reverse a sentence and rename its words, with a
few noisy references), binarizes it with fairseq-preprocess, trains a tiny
transformer with ``label_smoothed_cross_entropy`` and with ``tailr`` under the same
budget, generates the test set with beam search, and prints sacrebleu's BLEU for
both. Stages that already finished are skipped on a rerun.
"""
import argparse
import random
import re
import sys
from pathlib import Path

from .fairseq_commands import USER_DIR, run_fairseq

ARCH = [
    "--arch", "transformer", "--share-all-embeddings",
    "--encoder-layers", "2", "--decoder-layers", "2",
    "--encoder-embed-dim", "64", "--decoder-embed-dim", "64",
    "--encoder-ffn-embed-dim", "128", "--decoder-ffn-embed-dim", "128",
    "--encoder-attention-heads", "4", "--decoder-attention-heads", "4",
]  # fmt: skip

CRITERIA = {
    "mle": ["--criterion", "label_smoothed_cross_entropy", "--label-smoothing", "0.1"],
    "tailr": ["--criterion", "tailr", "--label-smoothing", "0.1",
              "--density-ratio-threshold", "0.1", "--density-min-weight", "0.3"],
}  # fmt: skip


def write_corpus(raw: Path, seed: int, n_train: int, noise: float) -> None:
    """Toy parallel text; a fraction ``noise`` of training targets is corrupted."""
    rng = random.Random(seed)
    words = [f"w{i}" for i in range(40)]
    raw.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("valid", 100), ("test", 100)):
        src, tgt = [], []
        for _ in range(n):
            sent = [rng.choice(words) for _ in range(rng.randint(3, 10))]
            out = ["v" + w[1:] for w in reversed(sent)]
            if split == "train" and rng.random() < noise:
                out = [rng.choice(words).replace("w", "v") for _ in out]
            src.append(" ".join(sent))
            tgt.append(" ".join(out))
        (raw / f"{split}.src").write_text("\n".join(src) + "\n")
        (raw / f"{split}.tgt").write_text("\n".join(tgt) + "\n")


def main(argv=None) -> int:
    """Run (or resume) the demo; returns a process exit code."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workdir", default="divgen-demo", type=Path)
    p.add_argument("--max-update", type=int, default=300)
    p.add_argument("--train-size", type=int, default=3000)
    p.add_argument("--noise", type=float, default=0.2)
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args(argv)
    work = args.workdir.resolve()
    raw, data = work / "raw", work / "bin"
    if not (data / "dict.src.txt").exists():
        print("== stage: data", flush=True)
        write_corpus(raw, args.seed, args.train_size, args.noise)
        run_fairseq("preprocess", [
            "--source-lang", "src", "--target-lang", "tgt", "--trainpref", raw / "train",
            "--validpref", raw / "valid", "--testpref", raw / "test",
            "--destdir", data, "--joined-dictionary", "--workers", "1",
        ], log_path=work / "preprocess.log")  # fmt: skip
    scores = {}
    for name, flags in CRITERIA.items():
        save = work / name
        if not (save / "done").exists():
            print(f"== stage: train {name}", flush=True)
            run_fairseq("train", [
                data, "--task", "translation", "--user-dir", USER_DIR, *ARCH, *flags,
                "--optimizer", "adam", "--adam-betas", "(0.9, 0.98)", "--lr", "0.002",
                "--lr-scheduler", "inverse_sqrt", "--warmup-updates", "50",
                "--max-tokens", "2000", "--max-update", args.max_update, "--seed", args.seed,
                "--save-dir", save, "--no-epoch-checkpoints", "--cpu", "--log-interval", "50",
                "--no-progress-bar",
            ], log_path=work / f"train-{name}.log", echo=True)  # fmt: skip
            (save / "done").touch()
        print(f"== stage: generate {name}", flush=True)
        out = run_fairseq("generate", [
            data, "--path", save / "checkpoint_best.pt", "--user-dir", USER_DIR, "--cpu",
            "--beam", "5", "--batch-size", "64", "--required-batch-size-multiple", "1",
        ], log_path=work / f"generate-{name}.txt").stdout  # fmt: skip
        scores[name] = float(re.search(r"BLEU4 = ([0-9.]+)", out).group(1))
    print("\n| criterion | test BLEU (beam 5) |\n|---|---|")
    for name, bleu in scores.items():
        print(f"| {name} | {bleu:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
