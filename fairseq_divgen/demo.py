"""``divgen-demo``: the synthetic-oracle experiment (MLE vs TaiLr vs LFD), end to end.

A fixed-seed oracle language model (a random 1-layer LSTM, as in TaiLr's synthetic
setting) is written as a fairseq checkpoint; train / valid / test text is sampled
from it and binarized with fairseq-preprocess; fairseq-train trains the same model
with MLE, TaiLr and LFD under equal budgets; each model's samples are scored by the
oracle (PPL_oracle, via fairseq-eval-lm) and against held-out oracle text (PPL_test,
BLEU-4), and for diversity (self-BLEU-4, distinct-2, seq-rep-4). Writes
``results.md``, ``results.json`` and ``results.png`` in the work folder; a rerun
skips finished stages. ``--sweep`` adds a grid of TaiLr and LFD settings and the
baselines (unlikelihood, loss truncation, MixCE, error norm truncation).
"""

import argparse
import logging
import sys
import time
from pathlib import Path

import torch

from .checks import check_range, check_weight
from .synthetic.experiment import ROWS, Experiment
from .synthetic.report import write_report
from .synthetic.sizes import SIZES, Methods
from .synthetic.sweep import run_sweep


def parse_args(argv=None) -> argparse.Namespace:
    """The demo's command line."""
    d = Methods()
    p = argparse.ArgumentParser(prog="divgen-demo", description=__doc__.splitlines()[0])
    p.add_argument(
        "--workdir",
        type=Path,
        default=Path("divgen-demo"),
        help="folder for everything the run writes (default: ./divgen-demo)",
    )
    p.add_argument(
        "--size",
        choices=sorted(SIZES),
        default="default",
        help="tiny: seconds (a smoke test); default: minutes on a 2-core CPU; "
        "large: 100k training samples, a GPU-sized budget",
    )
    p.add_argument("--seed", type=int, default=1, help="seed of the oracle, the data and training")
    p.add_argument(
        "--tailr-gamma", type=float, default=d.tailr_gamma, help="tailr --density-ratio-threshold"
    )
    p.add_argument(
        "--tailr-min-weight",
        type=float,
        default=d.tailr_min_weight,
        help="tailr --density-min-weight",
    )
    p.add_argument(
        "--truncation-ratio",
        type=float,
        default=d.truncation_ratio,
        help="truncated_ce --truncation-ratio of the degenerative model",
    )
    p.add_argument(
        "--degenerative-scale",
        type=float,
        default=d.degenerative_scale,
        help="lfd_poe --degenerative-scale (beta)",
    )
    p.add_argument(
        "--mle-weight", type=float, default=d.mle_weight, help="lfd_poe --mle-weight (lambda)"
    )
    p.add_argument(
        "--cpu",
        action="store_true",
        help="stay on the CPU even where CUDA is available (default: use the GPU if any)",
    )
    p.add_argument(
        "--sweep",
        action="store_true",
        help="after the main table, train and score a grid of TaiLr and LFD settings "
        "and of the baselines (unlikelihood, loss_truncation, mixce, error_norm_truncation)",
    )
    args = p.parse_args(argv)
    try:  # the criterions' own checks, before the oracle or any model is built
        check_range("--tailr-gamma", args.tailr_gamma, 0.0, 1.0)
        check_range("--tailr-min-weight", args.tailr_min_weight, 0.0, 1.0)
        check_range("--truncation-ratio", args.truncation_ratio, 0.0, 1.0, low_open=True)
        check_weight("--degenerative-scale", args.degenerative_scale)
        check_weight("--mle-weight", args.mle_weight)
    except ValueError as e:
        p.error(str(e))
    return args


def main(argv=None) -> int:
    """Run (or resume) the experiment; returns a process exit code."""
    args = parse_args(argv)
    # fairseq runs in this process too (oracle, sampling): keep its INFO lines out of
    # the progress; fairseq's subprocesses print their own progress as usual.
    for name in ("fairseq", "hydra", "matplotlib", "PIL"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # The in-process work (oracle, sampling) is many small ops: one thread is faster,
    # and much faster when the cores are shared.
    torch.set_num_threads(1)
    size = SIZES[args.size]
    size = type(size)(**{**size.__dict__, "seed": args.seed})
    methods = Methods(
        tailr_gamma=args.tailr_gamma,
        tailr_min_weight=args.tailr_min_weight,
        truncation_ratio=args.truncation_ratio,
        degenerative_scale=args.degenerative_scale,
        mle_weight=args.mle_weight,
    )
    start = time.time()
    cuda = torch.cuda.is_available() and not args.cpu
    exp = Experiment(args.workdir.resolve(), size, methods, cuda=cuda)

    def report(e: Experiment) -> None:
        import json

        stats = json.loads((e.work / "oracle" / "stats.json").read_text())
        header = (
            f"divgen-demo --size {args.size} --seed {args.seed}: "
            f"{size.n_train} training samples, {size.max_update} updates per model "
            f"(degenerative model: {size.degenerative_max_update}), {size.n_samples} samples each"
        )
        print(write_report(e.work, e.rows(ROWS), stats, header))

    exp.run(report)
    if args.sweep:
        print(run_sweep(exp))
    print(f"outputs in {exp.work}; wall time {time.time() - start:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
