"""Data-parallel fairseq-train on CPU: two gloo workers started by hand, and the
comparisons the distributed and resume tests make."""
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import torch

from fairseq_divgen.fairseq_commands import run_fairseq

# fairseq's own spawning starts no process without a GPU; each rank is started
# by hand instead (legacy_ddp: pytorch_ddp would pass GPU device ids to DDP).
TIMEOUT_S = 300
# Logged fields that measure time, or depend on the validations run so far, not training.
UNCOMPARED = {"wps", "ups", "wall", "train_wall", "best_loss"}
# Validation averages these per step; one worker takes two steps where two take one.
PER_VALID_STEP = {"wpb", "bsz"}
# One intra-op thread per process, as torchrun sets for several processes on one
# machine, and for the single worker too, so both setups run the same kernels.
ENV = {"OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
# fairseq-train, then destroy_process_group() before the interpreter exits (see there).
GLOO_WORKER = Path(__file__).resolve().parent / "gloo_worker.py"


def free_port() -> int:
    """A TCP port that was free a moment ago on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def gloo_flags(port: int, rank: int) -> list:
    """The flags that make one fairseq-train process rank ``rank`` of two CPU workers."""
    return [
        "--distributed-backend", "gloo", "--distributed-world-size", "2",
        "--distributed-no-spawn", "--distributed-init-method", f"tcp://127.0.0.1:{port}",
        "--distributed-rank", str(rank), "--ddp-backend", "legacy_ddp",
    ]  # fmt: skip


def _start(args):
    env = dict(os.environ, **ENV)
    return subprocess.Popen(
        [sys.executable, str(GLOO_WORKER), *[str(a) for a in args]], stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, env=env,
    )  # fmt: skip


def train_two_workers(args, attempts=3) -> str:
    """Run fairseq-train ``args`` as two gloo workers; return rank 0's output
    (the other ranks log warnings only). Retries when the port was taken."""
    for _ in range(attempts):
        port = free_port()
        procs = [_start([*args, *gloo_flags(port, rank)]) for rank in (0, 1)]
        try:
            outputs = [p.communicate(timeout=TIMEOUT_S)[0] for p in procs]
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()
        if all(p.returncode == 0 for p in procs):
            return outputs[0]
        if not any("address already in use" in o.lower() for o in outputs):
            break
    tails = "\n".join(
        f"--- rank {rank} ({p.returncode}):\n{out[-3000:]}"
        for rank, (p, out) in enumerate(zip(procs, outputs))
    )
    raise RuntimeError(f"two-worker fairseq-train failed:\n{tails}")


def train_one_worker(args) -> str:
    """Run fairseq-train ``args`` in one process; return its output."""
    return run_fairseq("train", args, env=ENV).stdout


def model_state(path):
    """The model state dict of a fairseq checkpoint (allowlisted by the plugin import)."""
    return torch.load(path, map_location="cpu")["model"]


def max_abs_param_diff(path_a, path_b) -> float:
    """Largest absolute difference between the model tensors of two checkpoints."""
    a, b = model_state(path_a), model_state(path_b)
    assert a.keys() == b.keys()
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a)


def _field(key):
    return key[len("valid_"):] if key.startswith("valid_") else key


def training_records(records):
    """Log records without the fields in ``UNCOMPARED`` (and, for validation,
    ``PER_VALID_STEP``), for exact comparison."""
    skip = lambda k: _field(k) in UNCOMPARED or (k.startswith("valid_") and _field(k) in PER_VALID_STEP)  # noqa: E731
    return [{k: v for k, v in r.items() if not skip(k)} for r in records]


def max_loss_diff(records_a, records_b, key="loss") -> float:
    """Largest absolute difference of a logged value over matching records."""
    assert len(records_a) == len(records_b)
    return max(abs(float(a[key]) - float(b[key])) for a, b in zip(records_a, records_b))


def all_finite(records, keys=("loss", "nll_loss")) -> bool:
    """Whether every record's ``keys`` are finite numbers."""
    return all(math.isfinite(float(r[k])) for r in records for k in keys)
