#!/usr/bin/env python3
"""LFD on a small synthetic language-modeling task: MLE against LFD at several
(beta, lambda), with EOS in the product of experts or not (``lfd_poe``'s default: not),
and the time per update of each run.

The corpus comes from a first-order Markov chain whose next-word distributions
are Zipfian (a few likely successors, a long tail), so a model that over-learns
the head degenerates into frequent, repetitive text. Every model has the same
architecture and budget. Each one continues 2-token test prefixes greedily and by
sampling; the outputs are scored with ``divgen-score``'s metrics.

    python scripts/lfd_sweep.py --workdir lfd-sweep           # ~10 min on 2 CPU cores
"""

import argparse
import json
import random
import re
import sys
from pathlib import Path

from lfd_study import lfd_settings  # scripts/lfd_study.py: one syntax for LFD settings

from fairseq_divgen.fairseq_commands import USER_DIR, run_fairseq
from fairseq_divgen.scoring.cli import markdown_table, score_texts
from fairseq_divgen.scoring.read import read_generate_output

ARCH = [
    "--arch",
    "transformer_lm",
    "--decoder-layers",
    "2",
    "--decoder-embed-dim",
    "64",
    "--decoder-input-dim",
    "64",
    "--decoder-output-dim",
    "64",
    "--decoder-ffn-embed-dim",
    "128",
    "--decoder-attention-heads",
    "4",
    "--tokens-per-sample",
    "64",
    "--sample-break-mode",
    "eos",
    "--dropout",
    "0.1",
]


def write_markov_corpus(raw: Path, seed: int, vocab: int, sizes) -> None:
    """Sentences from a Markov chain with Zipfian next-word distributions."""
    rng = random.Random(seed)
    words = [f"t{i}" for i in range(vocab)]
    zipf = [1.0 / (r + 1) ** 1.1 for r in range(vocab)]
    succ = {w: rng.sample(words, vocab) for w in words}  # each word ranks all successors
    raw.mkdir(parents=True, exist_ok=True)
    for split, n in zip(("train", "valid", "test"), sizes):
        lines = []
        for _ in range(n):
            w = rng.choices(words, weights=zipf)[0]
            sent = [w]
            while len(sent) < 40 and not (len(sent) >= 4 and rng.random() < 0.08):
                w = rng.choices(succ[w], weights=zipf)[0]
                sent.append(w)
            lines.append(" ".join(sent))
        (raw / f"{split}.txt").write_text("\n".join(lines) + "\n")


def train(data, save, flags, max_update, seed, task="language_modeling"):
    """Train one model unless its checkpoint exists; returns its last validation NLL and log."""
    log = save.parent / (save.name + ".log")
    if not (save / "checkpoint_last.pt").exists():
        out = run_fairseq(
            "train",
            [
                data,
                "--task",
                task,
                "--user-dir",
                USER_DIR,
                *ARCH,
                *flags,
                "--optimizer",
                "adam",
                "--adam-betas",
                "(0.9, 0.98)",
                "--lr",
                "0.003",
                "--lr-scheduler",
                "inverse_sqrt",
                "--warmup-updates",
                "100",
                "--max-tokens",
                "2048",
                "--max-update",
                max_update,
                "--seed",
                seed,
                "--save-dir",
                save,
                "--no-epoch-checkpoints",
                "--cpu",
                "--log-format",
                "json",
                "--log-interval",
                "50",
                "--no-progress-bar",
                "--num-workers",
                "0",
            ],
        ).stdout
        log.write_text(out)
    out = log.read_text()
    valid = [
        json.loads(line.split("| valid | ", 1)[1])
        for line in out.splitlines()
        if "| valid | " in line
    ][-1]
    return {
        "valid_nll": float(valid["valid_nll_loss"]),
        "log": log,
    }


def seconds_per_update(log: Path) -> float:
    """Mean wall seconds per update over the train_inner records after the first."""
    walls = []
    for line in log.read_text().splitlines():
        if "| train_inner | " in line:
            rec = json.loads(line.split("| train_inner | ", 1)[1])
            walls.append((int(rec["num_updates"]), float(rec["ups"])))
    ups = [u for _, u in walls[1:]] or [u for _, u in walls]
    return 1.0 / (sum(ups) / len(ups))


def generate(data, ckpt, out_path, mode, seed):
    """Continue 2-token test prefixes (greedy or pure sampling)."""
    if not out_path.exists():
        extra = ["--sampling", "--seed", seed] if mode == "sample" else []
        run_fairseq(
            "generate",
            [
                data,
                "--task",
                "language_modeling",
                "--path",
                ckpt,
                "--user-dir",
                USER_DIR,
                "--cpu",
                "--gen-subset",
                "test",
                "--prefix-size",
                "2",
                "--beam",
                "1",
                "--max-len-b",
                "40",
                "--batch-size",
                "64",
                "--required-batch-size-multiple",
                "1",
                "--tokens-per-sample",
                "64",
                "--sample-break-mode",
                "eos",
                *extra,
            ],
            log_path=out_path,
        )
    hyps, refs = read_generate_output(out_path)
    return score_texts(hyps, refs, tokenize="none")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workdir", type=Path, default=Path("lfd-sweep"))
    p.add_argument("--max-update", type=int, default=600)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument(
        "--settings",
        default="1:3,1:3:eos-in-product,1:1,1:1:eos-in-product,0.5:1",
        help="comma-separated beta:lambda[:flag[=value]...] settings of lfd_poe, as in "
        "lfd_study.py (flag: an lfd_poe flag without its dashes)",
    )
    p.add_argument("--truncation-ratio", type=float, default=0.5)
    args = p.parse_args(argv)
    work = args.workdir.resolve()
    data = work / "bin"
    if not (data / "dict.txt").exists():
        write_markov_corpus(work / "raw", 0, 300, (6000, 300, 300))
        run_fairseq(
            "preprocess",
            [
                "--only-source",
                "--trainpref",
                work / "raw/train.txt",
                "--validpref",
                work / "raw/valid.txt",
                "--testpref",
                work / "raw/test.txt",
                "--destdir",
                data,
                "--workers",
                "2",
            ],
        )
    runs = {
        "mle (ls-ce 0.1)": (
            "language_modeling",
            ["--criterion", "label_smoothed_cross_entropy", "--label-smoothing", "0.1"],
        ),
        "mle (ce)": (
            "language_modeling",
            ["--criterion", "label_smoothed_cross_entropy", "--label-smoothing", "0.0"],
        ),
        f"degenerative (truncated_ce R={args.truncation_ratio})": (
            "language_modeling",
            [
                "--criterion",
                "truncated_ce",
                "--truncation-ratio",
                str(args.truncation_ratio),
                "--truncation-warmup-updates",
                "100",
            ],
        ),
    }
    degen = work / "degenerative" / "checkpoint_last.pt"
    for _, flags, warmup in lfd_settings(args.settings):
        if warmup:
            p.error("--settings: @wN (a stage-1 warm-up) is not used here; see --truncation-ratio")
        _, beta, _, lam, *more = flags
        name = f"lfd_poe beta={beta} lambda={lam}" + "".join(f" {str(f).lstrip('-')}" for f in more)
        runs[name] = (
            "language_modeling_lfd",
            [
                "--criterion",
                "lfd_poe",
                *flags,
                "--degenerative-checkpoint",
                degen,
            ],
        )
    rows, timing = {}, {}
    for name, (task, flags) in runs.items():
        folder = (
            "degenerative"
            if name.startswith("degenerative")
            else re.sub(r"[^a-z0-9.=]+", "_", name)
        )
        save = work / folder
        print(f"== {name}", flush=True)
        info = train(data, save, flags, args.max_update, args.seed, task)
        timing[name] = seconds_per_update(info["log"])
        for mode in ("greedy", "sample"):
            m = generate(
                data, save / "checkpoint_last.pt", work / f"{folder}.{mode}.txt", mode, args.seed
            )
            rows[f"{name} [{mode}]"] = {
                "valid_nll": info["valid_nll"],
                "sec/update": timing[name],
                **m,
            }
    table = markdown_table(rows)
    print(table)
    (work / "results.md").write_text(table + "\n")
    (work / "results.json").write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
