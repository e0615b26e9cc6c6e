"""scripts/gpu_check.py in its --cpu-tiny mode: the GPU check's three steps run on the CPU
with tiny sizes, so the script a GPU session runs cannot rot."""

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]
ROOT = Path(__file__).resolve().parent.parent


def test_cpu_tiny_mode_runs_every_step_and_writes_the_summary(tmp_path):
    out = tmp_path / "gpu-check"
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gpu_check.py"), "--cpu-tiny", "--out", str(out)],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    summary = (out / "summary.md").read_text()
    for step in ("## pytest", "## precision", "## benchmark"):
        assert step in summary
    assert "passed" in summary and "failed" not in summary.split("## precision")[0]
    # every criterion, fused and unfused, trained in fp32 and fp16 without NaN or failure
    rows = [r for r in (out / "precision" / "results.md").read_text().splitlines()[2:] if r]
    assert len(rows) == 2 * 15 and all("| ok |" in r and "| False |" in r for r in rows)
    assert "| tailr (fused) |" in (out / "benchmark" / "bench.md").read_text()
