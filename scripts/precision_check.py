#!/usr/bin/env python3
"""Mixed precision: each criterion under --fp16, --memory-efficient-fp16 and --amp.

Builds a synthetic translation corpus on the spot (no downloads; a joined
vocabulary of 2 x 8,000 word types with Zipfian frequencies, so the output
layer is as wide as a real subword vocabulary and rare gold tokens have tiny
probabilities), then trains ``transformer_iwslt_de_en`` for 300 updates with
label_smoothed_cross_entropy, tailr, truncated_ce and lfd_poe (whose degenerative
model is the truncated_ce run of the same precision) under each precision, with
fairseq's default ``pytorch_ddp`` backend. From fairseq's own logs it writes
``results.md`` and ``results.json``: final training and validation loss, whether any
NaN/inf appeared, the final loss scale, and the number of overflows (each one an
optimizer step that fairseq skipped).

    python scripts/precision_check.py --workdir precision-check              # a CUDA GPU
    python scripts/precision_check.py --device cpu --workdir precision-cpu   # CPU, real fp16
    python scripts/precision_check.py --workdir /tmp/pc --dry-run            # plumbing check

``--device cpu`` runs the ``--fp16`` and ``--memory-efficient-fp16`` rows for real on
the CPU: fairseq's own FP16Optimizer / MemoryEfficientFP16Optimizer with
``--fp16-no-flatten-grads`` (the flattened variant needs CUDA), through
``scripts/cpu_fp16_train.py`` so that a gradient overflow is skipped as on a GPU
instead of stopping the run. It uses a smaller corpus and model (a 2 + 2-layer
transformer of width 64, 2 x 1,000 word types, 300 updates of 1,024 tokens), since
this CPU multiplies fp16 matrices about 16x slower than fp32, and an fp32 row per
criterion for comparison. ``--amp`` needs CUDA autocast and a CUDA GradScaler: its
rows say "GPU only". ``--dry-run`` runs a tiny corpus and model for a few updates in
fp32: it checks the plumbing, not precision.
"""

import argparse
import itertools
import json
import math
import platform
import random
import subprocess
import sys
from pathlib import Path

from fairseq_divgen.fairseq_commands import USER_DIR, run_fairseq

PRECISIONS = {
    "fp16": ["--fp16"],
    "memory_efficient_fp16": ["--memory-efficient-fp16"],
    "amp": ["--amp"],
    "fp32": [],
}
CRITERIA = {
    "label_smoothed_cross_entropy": [
        "--criterion",
        "label_smoothed_cross_entropy",
        "--label-smoothing",
        "0.1",
    ],
    "tailr": [
        "--criterion",
        "tailr",
        "--label-smoothing",
        "0.1",
        "--density-ratio-threshold",
        "0.1",
        "--density-min-weight",
        "0.3",
    ],
    "truncated_ce": ["--criterion", "truncated_ce", "--truncation-ratio", "0.5"],
    "lfd_poe": ["--criterion", "lfd_poe"],  # its defaults
    "unlikelihood": ["--criterion", "unlikelihood", "--rank-alpha", "1.0"],
    "mixce": ["--criterion", "mixce", "--mixing-ratio", "0.5"],
    "loss_truncation": "--criterion loss_truncation --dropc 0.4 --min-count 500 --recompute 500"
    " --label-smoothing 0.1".split(),
    "error_norm_truncation": "--criterion error_norm_truncation --token-prune-threshold 1.3"
    " --label-smoothing 0.1".split(),
}
FUSED = "+fused"  # a criterion name with this suffix runs with --fused-output
WORKER = Path(__file__).resolve().parent / "fairseq_worker.py"
CPU_FP16_TRAIN = Path(__file__).resolve().parent / "cpu_fp16_train.py"
GPU_ONLY = {"amp"}  # CUDA autocast and GradScaler
FULL = {
    "vocab": 8000,
    "sizes": (40000, 500, 500),
    "updates": 300,
    "log_interval": 10,
    "arch": ["--arch", "transformer_iwslt_de_en", "--share-all-embeddings"],
    "batch": ["--max-tokens", "4096"],
    "warmup": 100,
}
CPU = {
    "vocab": 1000,
    "sizes": (20000, 500, 500),
    "updates": 300,
    "log_interval": 10,
    "arch": [
        "--arch",
        "transformer",
        "--share-all-embeddings",
        "--encoder-layers",
        "2",
        "--decoder-layers",
        "2",
        "--encoder-embed-dim",
        "64",
        "--decoder-embed-dim",
        "64",
        "--encoder-ffn-embed-dim",
        "256",
        "--decoder-ffn-embed-dim",
        "256",
        "--encoder-attention-heads",
        "4",
        "--decoder-attention-heads",
        "4",
    ],
    "batch": ["--max-tokens", "1024", "--num-workers", "0", "--data-buffer-size", "0"],
    "warmup": 100,
}
TINY = {
    "vocab": 60,
    "sizes": (200, 20, 20),
    "updates": 6,
    "log_interval": 1,
    "arch": [
        "--arch",
        "transformer",
        "--share-all-embeddings",
        "--encoder-layers",
        "1",
        "--decoder-layers",
        "1",
        "--encoder-embed-dim",
        "16",
        "--decoder-embed-dim",
        "16",
        "--encoder-ffn-embed-dim",
        "32",
        "--decoder-ffn-embed-dim",
        "32",
        "--encoder-attention-heads",
        "2",
        "--decoder-attention-heads",
        "2",
    ],
    "batch": ["--max-tokens", "500", "--num-workers", "0"],
    "warmup": 2,
}
GPU_CHECK = {  # scripts/gpu_check.py: every criterion fused and unfused in minutes on one GPU
    "vocab": 8000,
    "sizes": (20000, 300, 300),
    "updates": 150,
    "log_interval": 10,
    "arch": "--arch transformer --share-all-embeddings --encoder-layers 2 --decoder-layers 2"
    " --encoder-embed-dim 256 --decoder-embed-dim 256 --encoder-ffn-embed-dim 1024"
    " --decoder-ffn-embed-dim 1024 --encoder-attention-heads 4 --decoder-attention-heads 4".split(),
    "batch": ["--max-tokens", "4096"],
    "warmup": 50,
}
OVERFLOW_FP16 = "NOTE: gradient overflow detected"
OVERFLOW_AMP = "AMP: overflow detected"
AMP_SKIPPED_BATCH = "AMP: skipping this batch"


def write_corpus(raw: Path, vocab: int, sizes, seed=1) -> None:
    """Parallel text over ``vocab`` source and ``vocab`` target word types: Zipfian words,
    the target a fixed renaming of the reversed source; every type occurs in train."""
    rng = random.Random(seed)
    src_words = [f"s{i}" for i in range(vocab)]
    rename = {w: f"t{(i * 7919) % vocab}" for i, w in enumerate(src_words)}
    cum = list(itertools.accumulate(1.0 / (r + 1) for r in range(vocab)))
    raw.mkdir(parents=True, exist_ok=True)
    for split, n in zip(("train", "valid", "test"), sizes):
        sents = [rng.choices(src_words, cum_weights=cum, k=rng.randint(4, 24)) for _ in range(n)]
        if split == "train":  # every type at least once, so the dictionary has them all
            sents += [src_words[i : i + 16] for i in range(0, vocab, 16)]
        (raw / f"{split}.src").write_text("".join(" ".join(s) + "\n" for s in sents))
        tgt = (" ".join(rename[w] for w in reversed(s)) + "\n" for s in sents)
        (raw / f"{split}.tgt").write_text("".join(tgt))


def json_records(output: str, kind: str):
    """fairseq's ``--log-format json`` records of one kind (train_inner, valid, ...)."""
    tag = f"| {kind} | "
    return [json.loads(line.split(tag, 1)[1]) for line in output.splitlines() if tag in line]


def _number(value):
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def summarize(output: str, returncode: int) -> dict:
    """The table row of one run, read from its fairseq-train output."""
    inner, valid = json_records(output, "train_inner"), json_records(output, "valid")
    epochs = json_records(output, "train")  # end-of-epoch averages
    losses = [_number(r.get(k)) for r in inner for k in ("loss", "nll_loss")]
    losses += [_number(r.get(k)) for r in valid for k in ("valid_loss", "valid_nll_loss")]
    last, last_valid = (inner[-1] if inner else {}), (valid[-1] if valid else {})
    counts = [_number(r.get("num_updates")) for r in inner]
    counts += [_number(r.get("train_num_updates")) for r in epochs]
    errors = [line for line in output.splitlines() if "Error" in line]
    return {
        "status": "ok"
        if returncode == 0
        else f"failed ({returncode}): {errors[-1] if errors else ''}".strip(),
        "updates": int(max([c for c in counts if c is not None], default=0)),
        "final_loss": _number(last.get("loss")),
        "final_nll_loss": _number(last.get("nll_loss")),
        "final_valid_nll_loss": _number(last_valid.get("valid_nll_loss")),
        "nan_or_inf": any(x is None or not math.isfinite(x) for x in losses)
        or "gradients are Nan/Inf" in output,
        "final_loss_scale": _number(last.get("loss_scale")),
        "overflows": output.count(OVERFLOW_FP16) + output.count(OVERFLOW_AMP),
        "amp_skipped_batches": output.count(AMP_SKIPPED_BATCH),
    }


def markdown(rows) -> str:
    """The rows as a markdown table."""
    cols = [
        "criterion",
        "precision",
        "status",
        "updates",
        "final_loss",
        "final_nll_loss",
        "final_valid_nll_loss",
        "nan_or_inf",
        "final_loss_scale",
        "overflows",
        "amp_skipped_batches",
        "valid_nll_vs_fp32",
    ]
    fmt = lambda v: f"{v:.3f}" if isinstance(v, float) else ("-" if v is None else str(v))  # noqa: E731
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(row.get(c)) for c in cols) + " |" for row in rows]
    return "\n".join(lines)


def with_fp32_differences(rows):
    """Each row's final validation NLL minus the fp32 run's of the same criterion (if any)."""
    fp32 = {r["criterion"]: r.get("final_valid_nll_loss") for r in rows if r["precision"] == "fp32"}
    for r in rows:
        ref, mine = fp32.get(r["criterion"]), r.get("final_valid_nll_loss")
        r["valid_nll_vs_fp32"] = None if ref is None or mine is None else mine - ref
    return rows


def environment() -> dict:
    """Versions and device the numbers were measured with."""
    import fairseq
    import torch

    cuda = torch.cuda.is_available()
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "fairseq": fairseq.__version__,
        "cuda": torch.version.cuda,
        "device": torch.cuda.get_device_name(0) if cuda else "cpu",
        "gpus": torch.cuda.device_count() if cuda else 0,
    }


def prepare_data(work: Path, setting) -> Path:
    """Write and binarize the corpus once (joined dictionary)."""
    data = work / "bin"
    if not (data / "dict.src.txt").exists():
        write_corpus(work / "raw", setting["vocab"], setting["sizes"])
        run_fairseq(
            "preprocess",
            [
                "--source-lang",
                "src",
                "--target-lang",
                "tgt",
                "--joined-dictionary",
                "--trainpref",
                work / "raw/train",
                "--validpref",
                work / "raw/valid",
                "--destdir",
                data,
                "--workers",
                "4",
            ],
            log_path=work / "preprocess.log",
        )
    return data


def train_args(data, save, name, precision, setting, cpu, updates):
    """fairseq-train's arguments for criterion ``name`` (``+fused``: with --fused-output)
    in ``precision``; None where the precision needs a GPU."""
    if cpu and precision in GPU_ONLY:
        return None
    criterion = name[: -len(FUSED)] if name.endswith(FUSED) else name
    flags = list(CRITERIA[criterion]) + (["--fused-output"] if name.endswith(FUSED) else [])
    task = "translation"
    if criterion == "lfd_poe":
        task = "translation_lfd"
        flags += [
            "--degenerative-checkpoint",
            save.parent / f"truncated_ce-{precision}" / "checkpoint_last.pt",
        ]
    if criterion == "truncated_ce":
        flags += ["--truncation-warmup-updates", str(setting["warmup"])]
    precision_flags = list(PRECISIONS[precision])
    if cpu and precision == "fp16":
        precision_flags.append("--fp16-no-flatten-grads")  # the flattened copy needs CUDA
    common = (
        "--dropout 0.1 --optimizer adam --adam-betas (0.9,0.98) --lr 7e-4 --lr-scheduler "
        "inverse_sqrt --seed 1 --no-epoch-checkpoints --log-format json --no-progress-bar"
    ).split()
    return [
        data,
        "--task",
        task,
        "--user-dir",
        USER_DIR,
        *setting["arch"],
        *flags,
        *precision_flags,
        *setting["batch"],
        *common,
        "--warmup-updates",
        setting["warmup"],
        "--max-update",
        updates,
        "--save-dir",
        save,
        "--log-interval",
        setting["log_interval"],
        *(["--cpu"] if cpu else []),
    ]


def run_all(work: Path, runs) -> dict:
    """Run ``(name, precision, argv, log)`` runs in order, in one process
    (scripts/fairseq_worker.py: fairseq's imports once, and on the CPU fairseq's fp16
    overflow branch made to work); returns each log's summary row."""
    todo = [{"argv": [str(a) for a in argv], "log": str(log)} for _, _, argv, log in runs if argv]
    (work / "runs.json").write_text(json.dumps(todo))
    with open(work / "worker.out", "w") as out:
        subprocess.run(
            [sys.executable, str(WORKER), str(work / "runs.json")],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    rows = []
    for name, precision, argv, log in runs:
        if argv is None:
            rows.append(
                {"criterion": name, "precision": precision, "status": "GPU only (CUDA autocast)"}
            )
            continue
        text = Path(log).read_text() if Path(log).exists() else ""
        rc = 0 if "WORKER: ok" in text else 1
        rows.append({"criterion": name, "precision": precision, **summarize(text, rc)})
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workdir", type=Path, default=Path("precision-check"))
    p.add_argument(
        "--device",
        choices=["cuda", "cpu"],
        default="cuda",
        help="cuda (default) or cpu: fairseq's fp16 on the CPU, a smaller setting",
    )
    p.add_argument(
        "--dry-run",
        dest="dry_run",
        action="store_true",
        help="tiny corpus and model, a few updates, on the CPU, fp32 only",
    )
    p.add_argument("--updates", type=int, help="updates per run (default 300; 6 with --dry-run)")
    p.add_argument(
        "--precisions",
        default=None,
        help=f"comma-separated, from {', '.join(PRECISIONS)} (default: fp16, "
        "memory_efficient_fp16, amp; fp32 with --dry-run)",
    )
    p.add_argument(
        "--criteria",
        default="label_smoothed_cross_entropy,tailr,truncated_ce,lfd_poe",
        help=f"comma-separated criterion names, each optionally with {FUSED} (--fused-output); "
        "'all': every criterion, fused and unfused",
    )
    p.add_argument(
        "--preset",
        choices=["full", "cpu", "gpu-check", "tiny"],
        default=None,
        help="corpus and model size (default: full on a GPU, cpu on the CPU, tiny with --dry-run)",
    )
    args = p.parse_args(argv)
    cpu = args.dry_run or args.device == "cpu"
    presets = {"full": FULL, "cpu": CPU, "gpu-check": GPU_CHECK, "tiny": TINY}
    setting = presets[args.preset or ("tiny" if args.dry_run else ("cpu" if cpu else "full"))]
    default = (
        "fp32"
        if args.dry_run
        else ("fp32,fp16,memory_efficient_fp16,amp" if cpu else "fp16,memory_efficient_fp16,amp")
    )
    precisions = (args.precisions or default).split(",")
    criteria = args.criteria.split(",")
    if criteria == ["all"]:
        criteria = ["label_smoothed_cross_entropy"] + [
            c + suffix
            for c in CRITERIA
            if c != "label_smoothed_cross_entropy"
            for suffix in ("", FUSED)
        ]
    unknown = [x for x in precisions if x not in PRECISIONS] + [
        c for c in criteria if c.replace(FUSED, "") not in CRITERIA
    ]
    if unknown:
        p.error(f"unknown precision or criterion: {', '.join(unknown)}")
    if args.dry_run and precisions != ["fp32"] and args.preset is None:
        p.error(
            "--dry-run runs on the CPU, where fairseq trains in fp32 only: leave out --precisions"
        )
    if "lfd_poe" in criteria and "truncated_ce" not in criteria[: criteria.index("lfd_poe")]:
        p.error("--criteria: lfd_poe needs truncated_ce before it (its degenerative model)")
    work = args.workdir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    data = prepare_data(work, setting)
    updates = args.updates or setting["updates"]
    runs = [
        (
            name,
            precision,
            train_args(data, work / f"{name}-{precision}", name, precision, setting, cpu, updates),
            work / f"{name}-{precision}.log",
        )
        for precision in precisions
        for name in criteria
    ]
    print(
        f"== {sum(r[2] is not None for r in runs)} runs in one process (logs in {work})", flush=True
    )
    rows = run_all(work, runs)
    rows = with_fp32_differences(rows)
    table = markdown(rows)
    print(table)
    (work / "results.md").write_text(table + "\n")
    report = {
        "environment": environment(),
        "updates": updates,
        "dry_run": args.dry_run,
        "device": "cpu" if cpu else "cuda",
        "runs": rows,
    }
    (work / "results.json").write_text(json.dumps(report, indent=2) + "\n")
    return 0 if all(r["status"] in ("ok", "GPU only (CUDA autocast)") for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
