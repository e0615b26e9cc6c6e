"""Loss stage alone: time and extra peak memory of each criterion's math from logits.

``python -m benchmarks.loss_stage --tokens 4096 --vocab 32000`` (from the repository root)
runs, for each criterion, what it computes after the model's forward (fairseq's own
criterions: the fp32 ``log_softmax`` of the logits, then the loss; this package's: its
objective on the logits, as the criterions call it without ``--fused-output``; for
``lfd_poe`` with the frozen model's logits) and the backward to the logits, each in its
own process: extra peak RSS over the inputs and median CPU seconds (one thread). ``--profile NAME``
prints the torch profiler's per-operator table (sorted by memory) for one of them.
"""

import argparse
import resource
import sys
import time
from statistics import median

import torch
import torch.nn.functional as F
from fairseq.criterions.label_smoothed_cross_entropy import label_smoothed_nll_loss

from fairseq_divgen.losses import (
    error_norm_truncated_loss,
    lfd_loss,
    loss_truncation_loss,
    mixce_loss,
    tailr_loss,
    truncated_nll_loss,
    unlikelihood_loss,
)

from .naive_tailr import naive_tailr_loss

PAD = 1
SEQ_LEN = 32  # tokens per sequence for the sequence-level losses (--tokens: a multiple)


def _lprobs(z):
    return F.log_softmax(z, dim=-1, dtype=torch.float32)  # fairseq's get_normalized_probs


def _lfd_poe(z, d, t):
    # the criterion's defaults (beta 1, lambda 3, EOS outside the product), with the
    # degenerative model's logits as the criterion passes them
    return lfd_loss(z, d, t, 1.0, 3.0, 0.1, PAD, eos_index=2)["loss"]


def _loss_truncation(z, d, t):
    target = t.view(-1, SEQ_LEN)
    with torch.no_grad():  # a cutoff that keeps half of the sequences (their median NLL)
        cutoff = (-_lprobs(z).gather(-1, t[:, None])).view(target.shape).mean(1).median()
    return loss_truncation_loss(z, target, cutoff, 0.1, PAD)["loss"]


STAGES = {
    "cross_entropy": lambda z, d, t: F.nll_loss(_lprobs(z), t, ignore_index=PAD, reduction="sum"),
    "label_smoothed_cross_entropy": lambda z, d, t: label_smoothed_nll_loss(
        _lprobs(z), t, 0.1, PAD
    )[0],
    "tailr": lambda z, d, t: tailr_loss(z, t, 0.1, 0.3, 0.1, PAD)["loss"],
    "truncated_ce": lambda z, d, t: truncated_nll_loss(z, t, 0.5, PAD, t.numel())["loss"],
    "lfd_poe": _lfd_poe,
    "tailr_naive_reference": lambda z, d, t: naive_tailr_loss(_lprobs(z), t, 0.1, 0.3, 0.1, PAD)[0],
    "unlikelihood": lambda z, d, t: unlikelihood_loss(z, t.view(-1, SEQ_LEN), 1.0, PAD)["loss"],
    "loss_truncation": _loss_truncation,
    "mixce": lambda z, d, t: mixce_loss(z, t, 0.5, PAD)["loss"],
    "error_norm_truncation": lambda z, d, t: error_norm_truncated_loss(z, t, 1.3, 0.1, PAD)["loss"],
}


def inputs(tokens, vocab, dtype, seed=0):
    """Logits of the main and of the degenerative model, and targets (no pads)."""
    g = torch.Generator().manual_seed(seed)
    z = (torch.randn(tokens, vocab, generator=g) * 3).to(dtype).requires_grad_(True)
    d = (torch.randn(tokens, vocab, generator=g) * 3).to(dtype)
    t = torch.randint(4, vocab, (tokens,), generator=g)
    return z, d, t


def _peak_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(conn, spec):
    """Process entry point: extra peak RSS and median time of one stage."""
    from .worker import fix_malloc_threshold

    fix_malloc_threshold()  # as in the benchmark's workers
    torch.set_num_threads(spec["threads"])
    z, d, t = inputs(spec["tokens"], spec["vocab"], getattr(torch, spec["dtype"]))
    stage = STAGES[spec["name"]]
    base = _peak_mb()
    seconds = []
    for _ in range(spec["repeats"]):
        z.grad = None
        start = time.process_time()  # one thread: CPU time, steadier than wall time here
        stage(z, d, t).backward()
        seconds.append(time.process_time() - start)
    conn.send({"extra_peak_mb": _peak_mb() - base, "seconds": median(seconds)})
    conn.close()


def profile(name, tokens, vocab, dtype):
    """The torch profiler's operator table (CPU time and memory) for one stage."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    z, d, t = inputs(tokens, vocab, getattr(torch, dtype))
    STAGES[name](z, d, t).backward()  # warm-up
    z.grad = None
    with torch_profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        STAGES[name](z, d, t).backward()
    return prof.key_averages().table(sort_by="self_cpu_memory_usage", row_limit=12)


def main(argv=None) -> int:
    """Measure every stage (or profile one) and print a markdown table."""
    from .runner import run_in_process

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tokens", type=int, default=4096)
    p.add_argument("--vocab", type=int, default=32000)
    p.add_argument(
        "--dtype",
        choices=["float32", "float16"],
        default="float32",
        help="dtype of the logits (the loss itself is fp32, as in fairseq)",
    )
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--stages", nargs="+", choices=list(STAGES), default=list(STAGES))
    p.add_argument("--profile", choices=sorted(STAGES), default=None)
    args = p.parse_args(argv)
    if args.profile:
        torch.set_num_threads(args.threads)
        print(profile(args.profile, args.tokens, args.vocab, args.dtype))
        return 0
    unit = args.tokens * args.vocab * 4 / 2**20
    print(
        f"N = {args.tokens}, V = {args.vocab}, {args.dtype} logits; one fp32 (N, V) "
        f"tensor = {unit:.0f} MiB\n\n| criterion | extra peak MiB | in (N, V) fp32 "
        "| CPU seconds (fwd + bwd) |\n|---|---|---|---|"
    )
    for name in args.stages:
        spec = {**vars(args), "name": name}
        r = run_in_process(name, measure, spec)
        print(
            f"| {name} | {r['extra_peak_mb']:.0f} | {r['extra_peak_mb'] / unit:.2f} "
            f"| {r['seconds']:.3f} |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
