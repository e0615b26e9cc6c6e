"""fairseq-train on the CPU as one worker or as two gloo workers, many runs per process
(``scripts/fairseq_worker.py``), and the comparisons the distributed tests make."""

import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import torch

from fairseq_divgen.fairseq_commands import run_fairseq

# fairseq's own spawning starts no process without a GPU; each rank is started by hand.
TIMEOUT_S = 600
# Logged fields that measure time, or depend on the validations run so far, not training.
UNCOMPARED = {"wps", "ups", "wall", "train_wall", "best_loss"}
# Validation averages these per step; one worker takes two steps where two take one.
PER_VALID_STEP = {"wpb", "bsz"}
# One intra-op thread per process, as torchrun sets for several processes on one
# machine, and for the single worker too, so both setups run the same kernels.
ENV = {"OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
WORKER = Path(__file__).resolve().parent.parent / "scripts" / "fairseq_worker.py"
OK, FAILED = "WORKER: ok", "WORKER: failed"


def free_port() -> int:
    """A TCP port that was free a moment ago on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Plan:
    """fairseq-train runs, each on one worker or on two gloo workers, executed in order
    within each setup by one process (one worker) and one pair of processes (two
    workers), the two setups side by side. A run's output is read after :meth:`execute`."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.runs = {1: [], 2: []}
        self.logs = {}

    def add(self, name, argv, workers: int = 1, tool: str = "train") -> None:
        """Plan fairseq-``tool`` (train, generate, eval-lm) ``argv`` on ``workers`` (1 or 2;
        2 for training only) under ``name``."""
        log = self.root / f"{len(self.logs):03d}.log"
        spec = {"argv": [str(a) for a in argv], "log": str(log), "tool": tool}
        self.runs[workers].append(spec)
        self.logs[name] = log

    def _start(self, workers: int, rank: int, port: int):
        runs = self.root / f"runs-{workers}.json"
        runs.write_text(json.dumps(self.runs[workers]))
        args = [sys.executable, str(WORKER), str(runs)]
        if workers > 1:
            args += [str(rank), str(workers), str(port)]
        out = open(self.root / f"worker-{workers}-{rank}.out", "w")
        return subprocess.Popen(
            args, stdout=out, stderr=subprocess.STDOUT, env=dict(os.environ, **ENV)
        )

    def execute(self) -> None:
        """Run everything planned; the processes' own output is in ``worker-*.out``."""
        procs = []
        if self.runs[1]:
            procs.append(self._start(1, 0, 0))
        if self.runs[2]:
            port = free_port()
            procs += [self._start(2, rank, port) for rank in (0, 1)]
        try:
            for p in procs:
                p.wait(timeout=TIMEOUT_S)
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()

    def output(self, name: str) -> str:
        """The log of run ``name``; raises with its tail (and the workers') if it failed."""
        log = self.logs[name]
        text = log.read_text() if log.exists() else ""
        if OK not in text:
            tails = "".join(
                f"\n--- {p.name}:\n{p.read_text()[-2000:]}"
                for p in sorted(self.root.glob("worker-*.out"))
            )
            raise RuntimeError(f"fairseq-train run {name!r} failed:\n{text[-4000:]}{tails}")
        return text


def train_one_worker(args) -> str:
    """Run fairseq-train ``args`` in one process of its own; return its output."""
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
    return key[len("valid_") :] if key.startswith("valid_") else key


def training_records(records):
    """Log records without the fields in ``UNCOMPARED`` (and, for validation,
    ``PER_VALID_STEP``), for exact comparison."""

    def skip(k):
        return _field(k) in UNCOMPARED or (k.startswith("valid_") and _field(k) in PER_VALID_STEP)

    return [{k: v for k, v in r.items() if not skip(k)} for r in records]


def max_loss_diff(records_a, records_b, key="loss") -> float:
    """Largest absolute difference of a logged value over matching records."""
    assert len(records_a) == len(records_b)
    return max(abs(float(a[key]) - float(b[key])) for a, b in zip(records_a, records_b))


def all_finite(records, keys=("loss", "nll_loss")) -> bool:
    """Whether every record's ``keys`` are finite numbers."""
    return all(math.isfinite(float(r[k])) for r in records for k in keys)
