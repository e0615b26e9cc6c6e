#!/usr/bin/env python3
"""Create the project's virtual environment and run the demo or the tests in it.

Usage (from the repository root, with nothing but Python >= 3.8 and pip):

    python3 scripts/dev.py demo [demo options]   # the synthetic demo (main job)
    python3 scripts/dev.py test [pytest options] # the test suite (all tiers)
    python3 scripts/dev.py test --fast           # the unit tier only (no fairseq tool runs)
    python3 scripts/dev.py test tests/test_x.py  # paths / node ids select, as with pytest
    python3 scripts/dev.py lint                  # ruff: lint and format check
    python3 scripts/dev.py setup                 # only build .venv

The environment lives in ``.venv`` (override with ``DIVGEN_VENV``). torch is
installed first, pinned by ``DIVGEN_TORCH`` (default ``torch==2.13.0``; set it to
e.g. ``torch==2.6.0`` or a CUDA wheel spec on a GPU machine), then fairseq is
compiled against that torch without pip's build isolation (otherwise pip would
download a second, multi-GB torch just to build it), then this package in
editable mode with its ``test`` and ``plot`` extras.
"""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = Path(os.environ.get("DIVGEN_VENV", ROOT / ".venv"))
TORCH = os.environ.get("DIVGEN_TORCH", "torch==2.13.0")
# fairseq's build needs these importable (no build isolation, see above).
BUILD_DEPS = ["cython", "numpy<2", "setuptools", "wheel"]  # numpy<2: see setup.py
FAIRSEQ = "fairseq==0.12.2" if sys.version_info < (3, 11) else "fairseq-fixed>=0.12.3.1"
STAMP = VENV / ".divgen-installed"


def _python() -> Path:
    return VENV / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def _run(cmd, **kwargs):
    print("+ " + " ".join(str(c) for c in cmd), flush=True)
    subprocess.run([str(c) for c in cmd], check=True, **kwargs)


def setup() -> Path:
    """Build the virtual environment once; later calls only check the stamp."""
    py = _python()
    wanted = "\n".join([TORCH, FAIRSEQ, (ROOT / "setup.py").read_text()])
    if STAMP.exists() and STAMP.read_text() == wanted and py.exists():
        return py
    if not py.exists():
        _run([sys.executable, "-m", "venv", VENV])
    pip = [py, "-m", "pip", "install", "--disable-pip-version-check"]
    _run(pip + [TORCH] + BUILD_DEPS)
    _run(pip + ["--no-build-isolation", FAIRSEQ])
    _run(pip + ["--no-build-isolation", "-e", f"{ROOT}[test,plot]"])
    STAMP.write_text(wanted)
    return py


# Two pytest workers (pytest-xdist), each test file on one of them (its module fixtures,
# which train tiny models once per file, are then built once): most tests wait on fairseq
# subprocesses of one thread, so two workers use the two cores of CI's machine.
WORKERS = ["-n", "2", "--dist", "loadfile"]


def pytest_args(rest) -> list:
    """pytest's arguments for ``dev.py test REST``: ``--fast`` selects the unit tier; the
    whole suite (pytest.ini's testpaths) unless a path or node id is given; two workers
    unless ``-n`` is given."""
    args = [a for a in rest if a != "--fast"]
    if len(args) != len(rest):
        args = ["-m", "unit", *args]
    if not any(a == "-n" or a.startswith(("-n=", "--numprocesses")) for a in args):
        args = [*WORKERS, *args]
    return args


def main(argv) -> int:
    if not argv or argv[0] not in {"setup", "demo", "test", "lint"}:
        print(__doc__)
        return 2
    cmd, rest = argv[0], argv[1:]
    py = setup()
    if cmd == "setup":
        return 0
    if cmd == "demo":
        return subprocess.call([str(py), "-m", "fairseq_divgen.demo", *rest], cwd=ROOT)
    if cmd == "lint":
        return subprocess.call([str(py), "-m", "ruff", "check", "."], cwd=ROOT) or subprocess.call(
            [str(py), "-m", "ruff", "format", "--check", "."], cwd=ROOT
        )
    return subprocess.call([str(py), "-m", "pytest", *pytest_args(rest)], cwd=ROOT)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
