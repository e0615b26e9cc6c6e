#!/usr/bin/env python3
"""TaiLr under --fp16 at scale: MLE, TaiLr as published, TaiLr with the gamma warm-up
and TaiLr warm-started from MLE (against MLE warm-started the same way), with equal update
budgets and the same seed.

Presets:

- ``--preset gpu`` (default): transformer_iwslt_de_en, --fp16, 4000 updates of 8192
  tokens per run, a Zipfian vocabulary of 8,000 source words and 100,000 pairs;
- ``--preset cpu``: fairseq's real fp16 training on the CPU (``--cpu --fp16
  --fp16-no-flatten-grads``, through ``scripts/cpu_fp16_train.py``, which lets a CPU
  run survive fairseq's overflow branch): a 2 + 2-layer transformer of width 64,
  1,000 words, 20,000 pairs, 1,600 updates of 1,024 tokens; about an hour on 2
  cores, since this CPU multiplies fp16 matrices some 16x slower than fp32;
- ``--tiny``: a plumbing check in a few minutes (numbers mean nothing).

The corpus is built offline: a toy translation rule (reverse the sentence and
rename every word), 3-30 words per sentence, and 20% of the training targets
replaced by random target words (the noise TaiLr is meant to resist); validation
and test sets are clean. For every run it records the validation NLL per update,
every "gradient overflow detected" skip with the update it hit, the loss-scale
trajectory, and beam-5 test BLEU (sacrebleu) with ``divgen-score``'s diversity
metrics; it writes ``results.md``, ``results.json`` and, if matplotlib is
installed, ``valid_nll.png``. Stages that finished are skipped on a rerun.

    python scripts/tailr_fp16_study.py --workdir tailr-fp16                # GPU
    python scripts/tailr_fp16_study.py --preset cpu --workdir tailr-fp16   # CPU, real fp16
    python scripts/tailr_fp16_study.py --preset cpu --tiny --workdir /tmp/s  # plumbing check
"""

import argparse
import json
import random
import re
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.configs import transformer  # noqa: E402
from fairseq_divgen.fairseq_commands import USER_DIR, run_fairseq  # noqa: E402
from fairseq_divgen.scoring.cli import score_texts  # noqa: E402
from fairseq_divgen.scoring.read import read_generate_output  # noqa: E402

TAILR = [
    "--criterion",
    "tailr",
    "--label-smoothing",
    "0.1",
    "--density-ratio-threshold",
    "0.1",
    "--density-min-weight",
    "0.3",
]
MLE = ["--criterion", "label_smoothed_cross_entropy", "--label-smoothing", "0.1"]
TINY_ARCH = transformer(layers=1, dim=32, ffn=64, heads=2)
CPU_ARCH = transformer(layers=2, dim=64, ffn=256, heads=4)
CPU_FP16_TRAIN = Path(__file__).resolve().parent / "cpu_fp16_train.py"
OVERFLOW = "gradient overflow detected"


def write_corpus(raw: Path, sizes, vocab: int, noise: float, seed: int) -> None:
    """A toy rule at scale: target = source reversed with every word renamed;
    a fraction ``noise`` of training targets is replaced by random words."""
    rng = random.Random(seed)
    zipf = [1.0 / (r + 1) for r in range(vocab)]
    raw.mkdir(parents=True, exist_ok=True)
    for split, n in zip(("train", "valid", "test"), sizes):
        src, tgt = [], []
        for _ in range(n):
            sent = rng.choices(range(vocab), weights=zipf, k=rng.randint(3, 30))
            out = list(reversed(sent))
            if split == "train" and rng.random() < noise:
                out = rng.choices(range(vocab), weights=zipf, k=len(out))
            src.append(" ".join(f"w{i}" for i in sent))
            tgt.append(" ".join(f"v{i}" for i in out))
        (raw / f"{split}.src").write_text("\n".join(src) + "\n")
        (raw / f"{split}.tgt").write_text("\n".join(tgt) + "\n")


def records(log: str, kind: str) -> list:
    """fairseq's JSON log records of one kind (``train_inner``, ``valid``)."""
    tag = f"| {kind} | "
    return [json.loads(line.split(tag, 1)[1]) for line in log.splitlines() if tag in line]


def train(args, data, save, flags, max_update, extra=()):
    """One fairseq-train run (skipped if it finished before); returns its log text."""
    log_path = save.parent / f"{save.name}.log"
    if not (save / "done").exists():
        start = time.time()
        train_args = [
            data,
            "--task",
            "translation",
            "--user-dir",
            USER_DIR,
            *args.arch,
            *flags,
            "--share-all-embeddings",
            "--dropout",
            "0.3",
            "--optimizer",
            "adam",
            "--adam-betas",
            "(0.9, 0.98)",
            "--lr",
            str(args.lr),
            "--lr-scheduler",
            "inverse_sqrt",
            "--warmup-updates",
            str(args.lr_warmup),
            "--max-tokens",
            str(args.max_tokens),
            "--max-update",
            str(max_update),
            "--seed",
            str(args.seed),
            "--save-dir",
            save,
            "--validate-interval-updates",
            str(args.valid_every),
            "--no-epoch-checkpoints",
            "--log-format",
            "json",
            "--log-interval",
            str(args.log_every),
            "--no-progress-bar",
            "--num-workers",
            "0",
            "--data-buffer-size",
            "0",
            *args.precision,
            *extra,
        ]
        if args.preset == "cpu":
            # fairseq-train itself, in a process where its overflow branch works on a CPU
            cmd = [sys.executable, str(CPU_FP16_TRAIN), *[str(a) for a in train_args]]
            with open(log_path, "w") as log:
                subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, check=True)
        else:
            run_fairseq("train", train_args, log_path=log_path, echo=args.verbose)
        (save / "done").write_text(f"{time.time() - start:.0f}\n")
    return log_path.read_text(), float((save / "done").read_text())


def overflows(log: str) -> list:
    """(update being attempted, loss scale after it) for every gradient overflow.

    fairseq does not count a skipped step, so an overflow hits update u + 1 when the
    last logged update was u (the study logs every update)."""
    last, out = 0, []
    for line in log.splitlines():
        if "| train_inner | " in line:
            last = int(json.loads(line.split("| train_inner | ", 1)[1])["num_updates"])
        elif OVERFLOW in line:
            scale = re.search(r"setting loss scale to: ([0-9.e+-]+)", line)
            out.append((last + 1, float(scale.group(1)) if scale else None))
    return out


def summarize(log: str, offset: int) -> dict:
    """Validation NLL per update (shifted by ``offset`` updates of a warm start),
    overflow skips (with their updates), the loss-scale trajectory, the last loss scale."""
    valid = [
        (int(r["valid_num_updates"]) + offset, float(r["valid_nll_loss"]))
        for r in records(log, "valid")
    ]
    inner = records(log, "train_inner")
    scales = [
        (int(r["num_updates"]) + offset, float(r["loss_scale"])) for r in inner if "loss_scale" in r
    ]
    changes = [p for i, p in enumerate(scales) if i == 0 or p[1] != scales[i - 1][1]]
    return {
        "valid_nll": valid,
        "overflows": [(u + offset, sc) for u, sc in overflows(log)],
        "loss_scale_changes": changes,
        "overflow_skips": log.count(OVERFLOW),
        "final_loss_scale": float(inner[-1]["loss_scale"])
        if inner and "loss_scale" in inner[-1]
        else None,
        "final_train_nll": float(inner[-1]["nll_loss"]) if inner else None,
    }


def generate(args, data, ckpt, out_path) -> dict:
    """Beam-5 translation of the test set; sacrebleu BLEU and divgen-score metrics."""
    if not out_path.exists():
        run_fairseq(
            "generate",
            [
                data,
                "--path",
                ckpt,
                "--user-dir",
                USER_DIR,
                "--beam",
                "5",
                "--gen-subset",
                "test",
                "--max-tokens",
                "8000",
                "--required-batch-size-multiple",
                "1",
                *args.generate_flags,
            ],
            log_path=out_path,
        )
    hyps, refs = read_generate_output(out_path)
    return score_texts(hyps, refs, tokenize="none")


def plot(results: dict, path: Path) -> str:
    """Validation NLL against updates, one line per run (needs matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed: no plot (pip install matplotlib to get one)"
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, r in results.items():
        xs, ys = zip(*r["valid_nll"]) if r["valid_nll"] else ((), ())
        ax.plot(xs, ys, marker="o", markersize=3, label=name)
    ax.set_xlabel("updates")
    ax.set_ylabel("validation NLL (base 2)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return f"wrote {path}"


def table(results: dict) -> str:
    """The results as a markdown table."""
    lines = [
        "| run | final valid NLL | best valid NLL | overflow skips (at updates) "
        "| final loss scale | BLEU | distinct-2 | seq-rep-4 | wall min |",
        "|---" * 9 + "|",
    ]
    for name, r in results.items():
        nll = [v for _, v in r["valid_nll"]]
        scale = "-" if r["final_loss_scale"] is None else f"{r['final_loss_scale']:g}"
        at = ", ".join(str(u) for u, _ in r["overflows"][:12]) + (
            ", ..." if len(r["overflows"]) > 12 else ""
        )
        lines.append(
            f"| {name} | {nll[-1]:.3f} | {min(nll):.3f} | {r['overflow_skips']}"
            f"{f' ({at})' if at else ''} | {scale} "
            f"| {r['bleu']:.2f} | {r['distinct_2']:.3f} | {r['seq_rep_4']:.3f} | {r['wall_s'] / 60:.1f} |"
        )
    changed = {
        name: r["loss_scale_changes"]
        for name, r in results.items()
        if len(r["loss_scale_changes"]) > 1
    }
    lines.append("")
    if not changed:
        lines.append("The loss scale never changed in any run.")
        return "\n".join(lines)
    lines.append(
        "Loss scale (update: scale, from the first logged update), in the runs where it changed:"
    )
    for name, changes in changed.items():
        lines.append(f"- {name}: " + ", ".join(f"{u}: {sc:g}" for u, sc in changes))
    return "\n".join(lines)


def parse_args(argv=None):
    """Command line; ``--tiny`` shrinks corpus, model and budget to a plumbing check."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workdir", type=Path, default=Path("tailr-fp16"))
    p.add_argument("--updates", type=int, default=4000, help="update budget of every run")
    p.add_argument(
        "--mle-updates",
        type=int,
        default=1000,
        help="MLE updates before the warm-started TaiLr run takes over",
    )
    p.add_argument(
        "--gamma-warmup",
        type=int,
        default=1000,
        help="--density-ratio-warmup-updates of the warm-up run",
    )
    p.add_argument("--train-size", type=int, default=100_000)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument(
        "--preset",
        choices=["gpu", "cpu"],
        default="gpu",
        help="gpu: --fp16 on CUDA at IWSLT scale; cpu: fairseq's fp16 on the CPU, small",
    )
    p.add_argument(
        "--tiny", action="store_true", help="a few minutes on a CPU: checks the plumbing only"
    )
    p.add_argument("--verbose", action="store_true", help="stream fairseq's output")
    args = p.parse_args(argv)
    given = {
        a.lstrip("-").split("=")[0].replace("-", "_")
        for a in (argv if argv is not None else sys.argv[1:])
        if a.startswith("--")
    }
    args.arch, args.vocab, args.sizes = (
        ["--arch", "transformer_iwslt_de_en"],
        8000,
        (args.train_size, 2000, 2000),
    )
    args.max_tokens, args.lr_warmup, args.valid_every, args.log_every, args.lr = (
        8192,
        1000,
        250,
        50,
        7e-4,
    )
    args.precision, args.generate_flags = ["--fp16"], ["--fp16"]
    if args.preset == "cpu":
        args.arch, args.vocab = CPU_ARCH, 1000
        args.sizes = (20_000 if "train_size" not in given else args.train_size, 500, 500)
        args.max_tokens, args.lr_warmup, args.valid_every, args.log_every, args.lr = (
            1024,
            200,
            200,
            1,
            1e-3,
        )
        args.precision, args.generate_flags = (
            ["--cpu", "--fp16", "--fp16-no-flatten-grads"],
            ["--cpu"],
        )
        for name, value in (("updates", 1600), ("mle_updates", 400), ("gamma_warmup", 400)):
            if name not in given:
                setattr(args, name, value)
    if args.tiny:
        args.arch, args.vocab, args.sizes = TINY_ARCH, 60, (2000, 100, 100)
        args.max_tokens, args.lr_warmup, args.valid_every, args.log_every = 1024, 10, 10, 1
        args.updates, args.mle_updates, args.gamma_warmup = 40, 20, 20
    if not 0 < args.mle_updates < args.updates:
        p.error("--mle-updates must be between 0 and --updates")
    return args


def main(argv=None) -> int:
    """Build the corpus, train the five runs, generate, and write the report."""
    args = parse_args(argv)
    work = args.workdir.resolve()
    data = work / "bin"
    if not (data / "dict.src.txt").exists():
        write_corpus(work / "raw", args.sizes, args.vocab, 0.2, args.seed)
        run_fairseq(
            "preprocess",
            [
                "--source-lang",
                "src",
                "--target-lang",
                "tgt",
                "--trainpref",
                work / "raw/train",
                "--validpref",
                work / "raw/valid",
                "--testpref",
                work / "raw/test",
                "--destdir",
                data,
                "--joined-dictionary",
                "--workers",
                "4",
            ],
            log_path=work / "preprocess.log",
        )
    k = args.mle_updates
    runs = {
        "mle": (
            MLE,
            args.updates,
            ["--save-interval-updates", str(k), "--keep-interval-updates", "-1"],
            0,
        ),
        "tailr (published)": (TAILR, args.updates, [], 0),
        f"tailr (gamma warm-up {args.gamma_warmup})": (
            TAILR + ["--density-ratio-warmup-updates", str(args.gamma_warmup)],
            args.updates,
            [],
            0,
        ),
        f"tailr (from mle @ {k})": (TAILR, args.updates - k, ["--warmup-updates", "100"], k),
        # like with like: MLE warm-started the same way (weights only, learning-rate restart)
        f"mle (from mle @ {k})": (MLE, args.updates - k, ["--warmup-updates", "100"], k),
    }
    results = {}
    for i, (name, (flags, budget, extra, offset)) in enumerate(runs.items()):
        save = work / f"run{i}"
        if offset:
            (mle_ckpt,) = (work / "run0").glob(f"checkpoint_*_{k}.pt")
            extra = extra + ["--finetune-from-model", str(mle_ckpt)]
        print(f"== train {name}", flush=True)
        log, wall = train(args, data, save, flags, budget, extra)
        results[name] = {**summarize(log, offset), "wall_s": wall}
        print(f"== generate {name}", flush=True)
        results[name].update(
            generate(args, data, save / "checkpoint_last.pt", work / f"generate{i}.txt")
        )
    report = table(results)
    (work / "results.md").write_text(report + "\n")
    (work / "results.json").write_text(json.dumps(results, indent=2))
    print(report)
    print(plot(results, work / "valid_nll.png"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
