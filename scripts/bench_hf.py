#!/usr/bin/env python3
"""Training throughput and peak memory of the transformers adapter against the model's own
loss, in the same run on the same batches (docs/transformers.md).

Every configuration trains the same GPT-2-style model (same seed) on the same fixed
batches of random tokens, in its own process (so that its peak memory is its own), one
``Trainer.training_step`` and one optimizer step (AdamW) per update:

- ``model's own loss``: transformers' ``Trainer`` without ``compute_loss_func`` (the model's
  ``ForCausalLMLoss`` on its (tokens, vocabulary) logits), the baseline;
- ``cross-entropy``: ``MixceLoss(mixing_ratio=1.0)``, exactly cross-entropy, through
  ``DivgenTrainer``, on the logits and fused (``fused_output=True``);
- ``tailr``: ``TailrLoss(density_ratio_threshold=0.1, density_min_weight=0.3,
  label_smoothing=0.1)``, on the logits and fused.

The processes take turns in rounds (the order rotates every round) after untimed warm-up
updates. On the CPU each process uses one torch thread and counts its own CPU time per
update (steadier than wall time on a shared machine); throughput is the median over
rounds, "vs own loss" the median of the per-round ratios to the baseline's turn in the same
round. Memory: the process's peak RSS, and the same less what it held after its imports
("peak above imports"); every allocation of 1 MiB or more is its own mmap (``mallopt``),
so that peak RSS does not depend on the history of frees.

    python scripts/bench_hf.py --out bench-hf      # writes bench-hf.json and bench-hf.md
"""

import argparse
import ctypes
import json
import multiprocessing
import os
import platform
import resource
import statistics
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BASELINE = "model's own loss (cross-entropy)"
CONFIGS = {
    BASELINE: ("own", False),
    "cross-entropy (MixceLoss eta 1), logits": ("ce", False),
    "cross-entropy (MixceLoss eta 1), fused": ("ce", True),
    "tailr, logits": ("tailr", False),
    "tailr, fused": ("tailr", True),
}


def peak_rss_mb() -> float:
    """This process's peak resident set size in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_now_mb() -> float:
    """This process's resident set size now, in MiB (Linux)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def fix_malloc_threshold(nbytes: int = 1 << 20) -> None:
    """Serve allocations of ``nbytes`` or more by their own mmap (glibc), so that a
    vocabulary-sized tensor costs the same pages whatever ran before."""
    try:
        ctypes.CDLL("libc.so.6").mallopt(-3, nbytes)  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        pass


def build(spec):
    """The trainer and the fixed batches of one configuration."""
    import torch
    import transformers
    from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainingArguments

    sys.path.insert(0, str(ROOT))
    from fairseq_divgen.hf import DivgenTrainer, MixceLoss, TailrLoss

    transformers.logging.set_verbosity_error()
    kind, fused = spec["config"]
    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=spec["vocab"],
        n_positions=spec["seq_len"],
        n_embd=spec["width"],
        n_layer=spec["layers"],
        n_head=max(1, spec["width"] // 64),
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
    )
    model = GPT2LMHeadModel(config)
    args = TrainingArguments(
        output_dir=spec["workdir"],
        use_cpu=True,
        report_to=[],
        per_device_train_batch_size=spec["batch"],
        learning_rate=1e-4,
        save_strategy="no",
        disable_tqdm=True,
    )
    if kind == "own":
        trainer = Trainer(model=model, args=args)
    else:
        loss = (
            MixceLoss(mixing_ratio=1.0)
            if kind == "ce"
            else TailrLoss(density_ratio_threshold=0.1, density_min_weight=0.3, label_smoothing=0.1)
        )
        trainer = DivgenTrainer(model=model, args=args, loss=loss, fused_output=fused)
    trainer.create_optimizer()
    g = torch.Generator().manual_seed(1)
    batches = []
    for _ in range(spec["batches"]):
        ids = torch.randint(0, spec["vocab"], (spec["batch"], spec["seq_len"]), generator=g)
        batches.append({"input_ids": ids, "labels": ids.clone()})
    return trainer, model, batches


def serve(conn, spec):
    """One configuration's process: build, then time updates on request."""
    try:
        fix_malloc_threshold()
        import torch

        torch.set_num_threads(spec["threads"])
        import transformers  # noqa: F401  (counted in the imports baseline)

        sys.path.insert(0, str(ROOT))
        import fairseq_divgen.hf  # noqa: F401

        base_mb = rss_now_mb()
        trainer, model, batches = build(spec)
        model.train()
        step = 0
        conn.send({"ready": True})
        while True:
            request = conn.recv()
            if request["op"] == "stop":
                conn.send({"peak_mb": peak_rss_mb(), "base_mb": base_mb})
                return
            seconds = []
            for _ in range(request["steps"]):
                batch = batches[step % len(batches)]
                step += 1
                count = batch["labels"][:, 1:].numel()  # every label but the first is a target
                start_cpu, start_wall = time.process_time(), time.perf_counter()
                trainer.training_step(model, dict(batch), torch.tensor(float(count)))
                trainer.optimizer.step()
                model.zero_grad(set_to_none=True)
                seconds.append((time.process_time() - start_cpu, time.perf_counter() - start_wall))
            conn.send({"seconds": seconds})
    except Exception:  # the parent reports it
        conn.send({"error": traceback.format_exc()})


def run(args) -> dict:
    """Start the workers, run the rounds, collect the rows."""
    ctx = multiprocessing.get_context("spawn")
    load_before = os.getloadavg()
    spec_base = dict(
        vocab=args.vocab,
        seq_len=args.seq_len,
        batch=args.batch,
        width=args.width,
        layers=args.layers,
        threads=args.threads,
        batches=4,
        workdir=str(Path(args.out).with_suffix(".tmp")),
    )
    workers = {}
    for name, config in CONFIGS.items():
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=serve, args=(child, {**spec_base, "config": config}), daemon=True)
        proc.start()
        workers[name] = (parent, proc)
        reply = parent.recv()  # one at a time: their peaks do not overlap while building
        if "error" in reply:
            raise RuntimeError(f"{name}:\n{reply['error']}")

    def ask(name, steps):
        conn, _ = workers[name]
        conn.send({"op": "run", "steps": steps})
        reply = conn.recv()
        if "error" in reply:
            raise RuntimeError(f"{name}:\n{reply['error']}")
        return reply["seconds"]

    names = list(CONFIGS)
    for name in names:
        ask(name, args.warmup)
    rounds = {name: [] for name in names}
    for r in range(args.repeats):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            rounds[name].append(ask(name, args.steps))
    summaries = {}
    for name, (conn, proc) in workers.items():
        conn.send({"op": "stop"})
        summaries[name] = conn.recv()
        proc.join(timeout=60)
    tokens = args.batch * args.seq_len

    def throughput(round_, clock):
        return tokens * len(round_) / sum(s[clock] for s in round_)

    rows = []
    base = summaries[BASELINE]
    for name in names:
        cpu = [throughput(r, 0) for r in rounds[name]]
        ratio = [
            throughput(r, 0) / throughput(b, 0) for r, b in zip(rounds[name], rounds[BASELINE])
        ]
        wall = [throughput(r, 1) for r in rounds[name]]
        peak = summaries[name]["peak_mb"]
        above = peak - summaries[name]["base_mb"]
        rows.append(
            {
                "configuration": name,
                "tokens_per_cpu_s": statistics.median(cpu),
                "vs_own_loss": statistics.median(ratio),
                "tokens_per_wall_s": statistics.median(wall),
                "seconds_per_step_cpu": tokens / statistics.median(cpu),
                "peak_rss_mb": peak,
                "peak_rss_vs_own": peak / base["peak_mb"],
                "peak_above_imports_mb": above,
                "above_imports_vs_own": above / (base["peak_mb"] - base["base_mb"]),
            }
        )
    import torch
    import transformers

    return {
        "settings": vars(args) | {"out": str(args.out)},
        "machine": {
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "python": platform.python_version(),
        },
        "load_average": {"before": load_before, "after": os.getloadavg()},
        "rows": rows,
    }


def markdown(result: dict) -> str:
    """The table and the settings and machine it was measured with."""
    s, m, load = result["settings"], result["machine"], result["load_average"]
    lines = [
        f"GPT-2-style, {s['layers']} layers, width {s['width']}, V = {s['vocab']}, "
        f"{s['batch']} x {s['seq_len']} = {s['batch'] * s['seq_len']} tokens per batch, fp32, "
        f"CPU ({m['cpu_count']} cores, shared), {s['threads']} thread(s) per process, "
        f"torch {m['torch']}, transformers {m['transformers']}; {s['repeats']} rounds x "
        f"{s['steps']} updates after {s['warmup']} warm-up; load average before "
        f"{load['before'][0]:.2f}, after {load['after'][0]:.2f}",
        "",
        "| configuration | tokens per CPU-s (median) | vs own loss | peak RSS MiB | vs own loss "
        "| peak above imports MiB | vs own loss |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['configuration']} | {r['tokens_per_cpu_s']:.0f} | {r['vs_own_loss']:.3f}x | "
            f"{r['peak_rss_mb']:.0f} | {r['peak_rss_vs_own']:.3f}x | "
            f"{r['peak_above_imports_mb']:.0f} | {r['above_imports_vs_own']:.3f}x |"
        )
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--vocab", type=int, default=32000)
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--batch", type=int, default=8, help="sequences per batch")
    p.add_argument("--width", type=int, default=256)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--threads", type=int, default=1, help="torch threads per process")
    p.add_argument("--warmup", type=int, default=1, help="untimed updates per process")
    p.add_argument("--repeats", type=int, default=5, help="rounds")
    p.add_argument("--steps", type=int, default=2, help="updates per process per round")
    p.add_argument("--out", type=Path, default=Path("bench-hf"))
    args = p.parse_args(argv)
    result = run(args)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=1))
    table = markdown(result)
    args.out.with_suffix(".md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
