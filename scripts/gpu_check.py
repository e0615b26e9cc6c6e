#!/usr/bin/env python3
"""The GPU check: what only a GPU shows, in at most about 5 minutes on one GPU.

    python scripts/gpu_check.py --out gpu-check            # one CUDA GPU
    python scripts/gpu_check.py --cpu-tiny --out /tmp/gc   # the same steps on the CPU (~1 min)

Writes under ``--out``, and prints, ``summary.md`` (device, torch and fairseq versions,
one section per step) plus each step's own files:

1. ``pytest/``: the gpu tier on the device (``pytest -m gpu``, tests/test_gpu.py: every
   objective fused and unfused against float64, fp16 / bf16 fused against unfused,
   half-precision matmuls also under CUDA autocast, NaN-filled memory, chunk sizes, the
   degenerative model's deferred finiteness check);
2. ``precision/``: every criterion, fused and unfused, trained by fairseq-train under
   fp32, ``--fp16`` and ``--amp`` (scripts/precision_check.py, preset ``gpu-check``: V =
   16k joined, a 2 + 2-layer transformer of width 256, 150 updates): overflows, the final
   loss scale, NaN/inf, and the final validation NLL against the fp32 run;
3. ``benchmark/``: ``scripts/benchmark.py --device cuda --fp16 --arch base --vocab 32000``,
   throughput and peak memory of the main criterions against label_smoothed_cross_entropy
   in the same run.

``--cpu-tiny`` runs the same three steps on the CPU with tiny sizes (the gpu tests on the
CPU, fp32 and fairseq's CPU fp16 for 6 updates, the benchmark's tiny arch): CI runs it,
so the check cannot rot. Its numbers mean nothing about a GPU. On the GPU machine of this
project, ``source .gpu/gpu-env.sh`` first (the kit in the development notes builds fairseq
there); use ``--skip`` to leave steps out.
"""

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STEPS = ("pytest", "precision", "benchmark")
BENCH_CRITERIA = [
    "label_smoothed_cross_entropy",
    "tailr",
    "tailr (fused)",
    "truncated_ce (fused)",
    "lfd_poe (quarter-size degenerative)",
    "lfd_poe (quarter-size degenerative, fused)",
    "unlikelihood (fused)",
]


def _run(cmd, log: Path, env=None, timeout=None) -> int:
    """Run ``cmd`` from the repository root, its output into ``log``; the exit code."""
    import os

    started = time.time()
    with open(log, "w") as out:
        try:
            code = subprocess.run(
                [str(c) for c in cmd],
                cwd=ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=dict(os.environ, **(env or {})),
                timeout=timeout,
            ).returncode
        except subprocess.TimeoutExpired:
            code = 124
    print(f"   {log.name}: exit {code} in {time.time() - started:.0f} s", flush=True)
    return code


def pytest_step(out: Path, tiny: bool) -> str:
    """The gpu tier on the device; its summary line."""
    out.mkdir(parents=True, exist_ok=True)
    env = {"DIVGEN_TEST_DEVICE": "cpu" if tiny else "cuda"}
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "-m",
        "gpu",
        "tests/test_gpu.py",
        "-q",
        "-rfs",
        "-p",
        "no:cacheprovider",
        "--junitxml",
        out / "junit.xml",
    ]
    code = _run(cmd, out / "pytest.txt", env)
    lines = (out / "pytest.txt").read_text().strip().splitlines()
    return f"exit {code}: {lines[-1] if lines else 'no output'}"


def precision_step(out: Path, tiny: bool) -> str:
    """Every criterion fused and unfused under each precision; the results table."""
    if tiny:
        flags = ["--device", "cpu", "--preset", "tiny", "--precisions", "fp32,fp16"]
    else:
        flags = ["--preset", "gpu-check", "--precisions", "fp32,fp16,amp"]
    cmd = [
        sys.executable,
        "scripts/precision_check.py",
        "--workdir",
        out,
        "--criteria",
        "all",
        *flags,
    ]
    code = _run(cmd, out.parent / "precision.txt")
    table = out / "results.md"
    return f"exit {code}\n\n" + (table.read_text() if table.exists() else "(no table)")


def benchmark_step(out: Path, tiny: bool) -> str:
    """Throughput and memory against LS-CE; the table."""
    out.mkdir(parents=True, exist_ok=True)
    if tiny:
        size = "--arch tiny --vocab 64 --tokens-per-batch 64 --seq-len 8 --steps 1 --repeats 1 --warmup 1"
    else:
        size = "--device cuda --fp16 --arch base --vocab 32000 --tokens-per-batch 4096 --repeats 3"
    cmd = [
        sys.executable,
        "scripts/benchmark.py",
        *size.split(),
        "--workdir",
        out / "work",
        "--out",
        out / "bench",
        "--criteria",
        *BENCH_CRITERIA,
    ]
    code = _run(cmd, out.parent / "benchmark.txt")
    table = out / "bench.md"
    return f"exit {code}\n\n" + (table.read_text() if table.exists() else "(no table)")


def environment(tiny: bool) -> str:
    """The device and the versions, one line."""
    import fairseq
    import torch

    device = "CPU (--cpu-tiny)" if tiny else torch.cuda.get_device_name(0)
    return (
        f"{device}; Python {platform.python_version()}, torch {torch.__version__} "
        f"(CUDA {torch.version.cuda}), fairseq {fairseq.__version__}"
    )


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True, help="folder for everything written")
    p.add_argument("--cpu-tiny", action="store_true", help="the same steps on the CPU, tiny sizes")
    p.add_argument("--skip", nargs="*", choices=STEPS, default=[], help="steps to leave out")
    args = p.parse_args(argv)
    import torch

    if not args.cpu_tiny and not torch.cuda.is_available():
        p.error("no CUDA device here: run it on a GPU, or pass --cpu-tiny")
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    sections = [f"# GPU check\n\n{environment(args.cpu_tiny)}\n"]
    steps = {"pytest": pytest_step, "precision": precision_step, "benchmark": benchmark_step}
    results = {}
    for name in STEPS:
        if name in args.skip:
            continue
        print(f"== {name}", flush=True)
        results[name] = steps[name](out / name, args.cpu_tiny)
        sections.append(f"## {name}\n\n{results[name]}\n")
    sections.append(f"Wall time {time.time() - started:.0f} s.\n")
    summary = "\n".join(sections)
    (out / "summary.md").write_text(summary)
    (out / "summary.json").write_text(json.dumps(results, indent=1) + "\n")
    print(summary)
    return 0 if all(r.startswith("exit 0") for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
