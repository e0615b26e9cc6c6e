"""The package registers its components once, however it is imported, and leaves logging alone."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _python(code, cwd=ROOT):
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=cwd)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


CHECK_REGISTERED = """
from fairseq.criterions import CRITERION_REGISTRY
from fairseq.tasks import TASK_REGISTRY
for name in ("tailr", "truncated_ce", "lfd_poe", "unlikelihood", "mixce", "loss_truncation",
             "error_norm_truncation"):
    assert name in CRITERION_REGISTRY, name
for name in ("translation_lfd", "language_modeling_lfd"):
    assert name in TASK_REGISTRY, name
print("registered")
"""


def test_import_then_user_dir_then_register_registers_once():
    # fairseq_divgen imported before fairseq: fairseq's --user-dir loader then skips the
    # package it already finds imported; register() (documented) registers, once.
    out = _python(
        "import argparse, sys, fairseq_divgen\n"
        "assert 'fairseq' not in sys.modules\n"
        "from fairseq import utils\n"
        f"utils.import_user_module(argparse.Namespace(user_dir={str(ROOT / 'fairseq_divgen')!r}))\n"
        "fairseq_divgen.register()\n"
        "fairseq_divgen.register()\n" + CHECK_REGISTERED
    )
    assert "registered" in out


def test_relative_user_dir_then_import_is_the_same_module():
    out = _python(
        "import argparse, sys\n"
        "from fairseq import utils\n"
        "utils.import_user_module(argparse.Namespace(user_dir='fairseq_divgen'))\n"
        "utils.import_user_module(argparse.Namespace(user_dir='fairseq_divgen'))\n"
        "mod = sys.modules['fairseq_divgen']\n"
        "import fairseq_divgen\n"
        "assert fairseq_divgen is mod\n" + CHECK_REGISTERED
    )
    assert "registered" in out


def test_import_does_not_reconfigure_logging():
    # fairseq itself calls logging.basicConfig when its task registry is imported;
    # import that first, then check that this package changes nothing more.
    out = _python(
        "import logging\n"
        "import fairseq.tasks, fairseq.criterions, fairseq.models\n"
        "def snapshot():\n"
        "    loggers = logging.root.manager.loggerDict\n"
        "    return (list(logging.root.handlers), logging.root.level,\n"
        "            {n: (l.level, list(l.handlers), l.propagate) for n, l in loggers.items()\n"
        "             if isinstance(l, logging.Logger) and not n.startswith('fairseq_divgen')})\n"
        "before = snapshot()\n"
        "import fairseq_divgen\n"
        "after = snapshot()\n"
        "assert before[:2] == after[:2]\n"
        "assert all(after[2][n] == v for n, v in before[2].items())\n"
        "print('unchanged')\n"
    )
    assert "unchanged" in out


def test_import_after_fairseq_registers_and_allowlists():
    out = _python(
        "import fairseq, argparse, torch, fairseq_divgen\n"
        "assert argparse.Namespace in torch.serialization.get_safe_globals()\n" + CHECK_REGISTERED
    )
    assert "registered" in out


def test_importing_the_criterions_registers_everything():
    out = _python(
        "import argparse, torch, fairseq_divgen.criterions\n"
        "assert argparse.Namespace in torch.serialization.get_safe_globals()\n" + CHECK_REGISTERED
    )
    assert "registered" in out


def test_importing_the_package_first_imports_nothing_heavy():
    out = _python(
        "import sys, fairseq_divgen\n"
        "print('heavy:', [m for m in ('torch', 'fairseq') if m in sys.modules])\n"
    )
    assert "heavy: []" in out


def test_user_dir_alone_registers_everything():
    out = _python(
        "import argparse\n"
        "from fairseq import utils\n"
        f"utils.import_user_module(argparse.Namespace(user_dir={str(ROOT / 'fairseq_divgen')!r}))\n"
        + CHECK_REGISTERED,
        cwd="/",
    )
    assert "registered" in out


def test_the_fairseq_path_never_imports_the_transformers_adapter():
    # The transformers extra is optional: registering for fairseq (what --user-dir does)
    # must load neither fairseq_divgen.hf nor transformers, installed or not.
    out = _python(
        "import sys, fairseq, fairseq_divgen, fairseq_divgen.criterions, fairseq_divgen.tasks\n"
        + CHECK_REGISTERED
        + "print('hf:', [m for m in ('fairseq_divgen.hf', 'transformers') if m in sys.modules])\n"
    )
    assert "registered" in out and "hf: []" in out


def test_scoring_imports_neither_torch_nor_fairseq():
    out = _python(
        "import sys\n"
        "import fairseq_divgen.scoring, fairseq_divgen.scoring.cli\n"
        "heavy = [m for m in ('torch', 'fairseq', 'numpy', 'transformers') if m in sys.modules]\n"
        "print('heavy:', heavy)\n"
    )
    assert "heavy: []" in out


def test_divgen_score_help_import_time_budget():
    # -X importtime: the cumulative import time of the CLI module, in microseconds.
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import fairseq_divgen.scoring.cli"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    line = next(
        line
        for line in result.stderr.splitlines()
        if line.rstrip().endswith("fairseq_divgen.scoring.cli")
    )
    cumulative_us = int(line.split("|")[1])
    assert cumulative_us < 300_000, line  # well under a second (torch alone takes seconds)
