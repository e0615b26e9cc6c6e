"""Run fairseq's command-line tools (preprocess, train, generate, ...) in a subprocess."""

import os
import subprocess
import sys
from pathlib import Path
from typing import Iterable, Optional

USER_DIR = str(Path(__file__).resolve().parent)

# fairseq console script -> the fairseq_cli module that implements it
TOOLS = {
    "preprocess": "fairseq_cli.preprocess",
    "train": "fairseq_cli.train",
    "generate": "fairseq_cli.generate",
    "interactive": "fairseq_cli.interactive",
    "validate": "fairseq_cli.validate",
    "eval-lm": "fairseq_cli.eval_lm",
    "hydra-train": "fairseq_cli.hydra_train",
}


def fairseq_command(tool: str, args: Iterable) -> list:
    """The argv that runs ``fairseq-<tool>`` with this interpreter."""
    return [sys.executable, "-m", TOOLS[tool], *[str(a) for a in args]]


def run_fairseq(
    tool: str,
    args: Iterable,
    log_path: Optional[Path] = None,
    check: bool = True,
    echo: bool = False,
    env: Optional[dict] = None,
    cwd: Optional[Path] = None,
) -> subprocess.CompletedProcess:
    """Run ``fairseq-<tool> args``; keep its combined output (and write it to ``log_path``).

    With ``echo`` the output is also streamed to this process's stdout, so a user
    sees fairseq's own progress. Raises ``RuntimeError`` with the output's tail when
    ``check`` and the tool fails.
    """
    cmd = fairseq_command(tool, args)
    full_env = dict(os.environ, **(env or {}))
    full_env.setdefault("PYTHONUNBUFFERED", "1")
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=full_env,
        cwd=cwd,
    )
    lines = []
    # The log grows as the tool runs, so a long run can be followed with tail -f.
    log = open(log_path, "w") if log_path is not None else None
    try:
        for line in proc.stdout:
            lines.append(line)
            if log is not None:
                log.write(line)
                log.flush()
            if echo:
                sys.stdout.write(line)
                sys.stdout.flush()
    finally:
        if log is not None:
            log.close()
    proc.wait()
    output = "".join(lines)
    result = subprocess.CompletedProcess(cmd, proc.returncode, output, None)
    if check and proc.returncode != 0:
        tail = "".join(lines[-40:])
        raise RuntimeError(f"fairseq-{tool} failed ({proc.returncode}):\n{tail}")
    return result
