"""``scripts/benchmark.py`` (``python -m benchmarks``): training throughput and peak memory
of every criterion against ``label_smoothed_cross_entropy``, through fairseq's Trainer.

Every configuration trains the same model (same seed) on the same fixed batches with
``fairseq.trainer.Trainer.train_step``, in its own process; the configurations are
interleaved round by round and the medians over rounds are reported. ``lfd_poe`` runs
with a degenerative checkpoint of the main model's size and with a quarter-size one,
both real fairseq checkpoints written in the run and loaded by ``translation_lfd``.
"""

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

from . import configs, report, runner, worker
from .data import SRC, TGT, write_dictionaries


def parse_args(argv=None):
    """The benchmark's command line."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--arch",
        choices=sorted(configs.ARCHS),
        default="small",
        help="model preset: base (transformer base), iwslt "
        "(transformer_iwslt_de_en), lstm, or small / tiny for CPU runs",
    )
    p.add_argument(
        "--vocab",
        type=int,
        default=8000,
        help="vocabulary size V, e.g. 8000, 32000, 50000 (fairseq's specials included)",
    )
    p.add_argument(
        "--tokens-per-batch",
        type=int,
        default=2048,
        help="target tokens per batch (sentence pairs of --seq-len tokens)",
    )
    p.add_argument("--seq-len", type=int, default=32, help="tokens per sentence, both sides")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--fp16", action="store_true", help="fairseq's --fp16")
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch intra-op threads per worker (default: 1 on the CPU, where a "
        "single thread is far less disturbed by other processes; torch's default on a GPU)",
    )
    p.add_argument("--repeats", type=int, default=5, help="timed rounds per configuration")
    p.add_argument("--steps", type=int, default=3, help="updates per round")
    p.add_argument("--warmup", type=int, default=2, help="untimed updates before the rounds")
    p.add_argument("--num-batches", type=int, default=4, help="distinct fixed batches, cycled")
    p.add_argument(
        "--criteria",
        nargs="+",
        default=list(configs.ROWS),
        metavar="ROW",
        help="rows to run (the LS-CE baseline is always added); default all: "
        + ", ".join(configs.ROWS),
    )
    p.add_argument("--seed", type=int, default=1)
    p.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="where the dictionaries and degenerative checkpoints go (default: a temp dir)",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=Path("benchmark"),
        help="output prefix: writes OUT.json and OUT.md",
    )
    args = p.parse_args(argv)
    unknown = [c for c in args.criteria if c not in configs.ROWS]
    if unknown:
        p.error(f"--criteria: unknown {unknown}; choose from {list(configs.ROWS)}")
    if args.vocab < 8 or args.tokens_per_batch < 1 or args.seq_len < 2:
        p.error("--vocab must be >= 8, --tokens-per-batch >= 1 and --seq-len >= 2")
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            p.error("--device cuda: torch sees no CUDA device here (use --device cpu)")
    if args.threads is None and args.device == "cpu":
        args.threads = 1
    if args.fp16 and args.device == "cpu":
        p.error("--fp16 needs --device cuda: fairseq's fp16 optimizer calls torch.cuda")
    return args


def _fairseq_argv(args, data_dir, save_dir, criterion, flags, arch_flags, task="translation"):
    argv = [
        str(data_dir),
        "--task",
        task,
        "--source-lang",
        SRC,
        "--target-lang",
        TGT,
        *arch_flags,
        *configs.OPTIMIZER,
        "--criterion",
        criterion,
        *flags,
        "--seed",
        str(args.seed),
        "--save-dir",
        str(save_dir),
        "--no-progress-bar",
    ]
    if args.device == "cpu":
        argv.append("--cpu")
    if args.fp16:
        argv.append("--fp16")
    return argv


def _spec(args, argv):
    return {"argv": argv, "batches": _batch_spec(args), "threads": args.threads}


def _batch_spec(args):
    return {
        "tokens_per_batch": args.tokens_per_batch,
        "seq_len": args.seq_len,
        "num_batches": args.num_batches,
        "seed": args.seed,
    }


def build_degenerative(args, work, size) -> tuple:
    """Write the ``size`` degenerative checkpoint (one truncated_ce update, fp32, CPU)."""
    path = work / f"degenerative-{size}.pt"
    argv = _fairseq_argv(
        argparse.Namespace(**{**vars(args), "device": "cpu", "fp16": False}),
        work / "data",
        work / "degenerative-save",
        "truncated_ce",
        ["--truncation-ratio", "0.5"],
        configs.degenerative_arch(args.arch, size),
    )
    spec = {**_spec(args, argv), "path": str(path)}
    reply = runner.run_in_process(
        f"degenerative {size}", worker.build_degenerative_checkpoint, spec, args.device
    )
    return path, reply["params"]


def worker_specs(args, work, checkpoints) -> tuple:
    """Fairseq command line and batches of every configuration, and what the JSON
    records about each."""
    names = [configs.BASELINE] + [c for c in args.criteria if c != configs.BASELINE]
    specs, meta = {}, {}
    for name in names:
        criterion, flags, size = configs.ROWS[name]
        task = "translation"
        if size is not None:
            task = "translation_lfd"
            flags = flags + ["--degenerative-checkpoint", str(checkpoints[size])]
        argv = _fairseq_argv(
            args, work / "data", work / "save", criterion, flags, configs.main_arch(args.arch), task
        )
        specs[name] = _spec(args, argv)
        meta[name] = {
            "criterion": criterion,
            "task": task,
            "flags": flags,
            "degenerative_size": size,
        }
    return specs, meta


def machine() -> dict:
    """What the numbers were measured on."""
    import torch

    info = {
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def run(args) -> dict:
    """Run the whole benchmark; returns what is written to the JSON file."""
    started = time.time()
    own_tmp = None
    work = args.workdir
    if work is None:
        own_tmp = tempfile.TemporaryDirectory(prefix="divgen-benchmark-")
        work = Path(own_tmp.name)
    work.mkdir(parents=True, exist_ok=True)
    try:
        load_before = os.getloadavg()
        write_dictionaries(work / "data", args.vocab)
        sizes = {configs.ROWS[c][2] for c in args.criteria} - {None}
        checkpoints, degen_params = {}, {}
        for size in sorted(sizes):
            checkpoints[size], degen_params[size] = build_degenerative(args, work, size)
        specs, meta = worker_specs(args, work, checkpoints)
        loads = []
        workers = runner.Workers(specs, args.device)
        try:
            timings = runner.interleaved_rounds(
                workers,
                specs,
                args.repeats,
                args.steps,
                args.warmup,
                on_round=lambda r, load: loads.append(load),
            )
            summaries = workers.finish()
        finally:
            workers.close()
    finally:
        if own_tmp is not None:
            own_tmp.cleanup()
    clock = "wall" if args.device == "cuda" else "cpu"
    rows = report.build_rows(timings, summaries, configs.BASELINE, meta, clock)
    return {
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "machine": machine(),
        "memory": "torch.cuda.max_memory_allocated"
        if args.device == "cuda"
        else "peak RSS of the configuration's process (ru_maxrss)",
        "load_average": {
            "before": load_before,
            "after_each_round": loads,
            "after": os.getloadavg(),
        },
        "degenerative_params": degen_params,
        "wall_s": time.time() - started,
        "rows": rows,
    }


def markdown(result: dict) -> str:
    """The table plus the settings and machine it was measured with."""
    s, m = result["settings"], result["machine"]
    label = "peak GPU memory" if s["device"] == "cuda" else "peak RSS"
    load = result["load_average"]
    where = m.get("gpu") or f"CPU ({m['cpu_count']} cores)"
    return "\n".join(
        [
            f"arch {s['arch']}, V = {s['vocab']}, {s['tokens_per_batch']} tokens/batch "
            f"(length {s['seq_len']}), {'fp16' if s['fp16'] else 'fp32'}, {where}, "
            f"{s['threads'] or 'default'} thread(s) per worker, torch {m['torch']}; "
            f"{s['repeats']} rounds x {s['steps']} updates after {s['warmup']} warm-up; "
            f"load average before {load['before'][0]:.2f}, after {load['after'][0]:.2f}",
            "",
            report.markdown_table(result["rows"], label),
            "",
        ]
    )


def main(argv=None) -> int:
    """Run the benchmark, write OUT.json and OUT.md, print the table."""
    args = parse_args(argv)
    result = run(args)
    out = args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    json_path = out.with_name(out.name + ".json")
    md_path = out.with_name(out.name + ".md")
    json_path.write_text(json.dumps(result, indent=2))
    md_path.write_text(markdown(result))
    print(markdown(result))
    print(f"wrote {json_path} and {md_path} ({result['wall_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
