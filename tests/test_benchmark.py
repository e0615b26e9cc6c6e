"""The benchmark harness end to end in a tiny CPU configuration (no timing assertions)."""

import json
import math

import pytest

from benchmarks import configs
from benchmarks.cli import main

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_tiny_cpu_benchmark_reports_every_criterion(tmp_path):
    out = tmp_path / "bench"
    assert (
        main(
            [
                "--arch",
                "tiny",
                "--vocab",
                "64",
                "--tokens-per-batch",
                "64",
                "--seq-len",
                "8",
                "--steps",
                "1",
                "--repeats",
                "1",
                "--warmup",
                "1",
                "--workdir",
                str(tmp_path / "work"),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    result = json.loads(out.with_name("bench.json").read_text())
    rows = {r["name"]: r for r in result["rows"]}
    assert set(rows) == set(configs.ROWS)
    for r in rows.values():
        for key in ("tokens_per_s", "throughput_ratio", "peak_memory_mb", "memory_ratio"):
            assert math.isfinite(r[key]) and r[key] > 0, (r["name"], key, r[key])
        assert r["params"] == rows[configs.BASELINE]["params"]  # the same main model
    assert rows[configs.BASELINE]["throughput_ratio"] == 1.0
    # Both degenerative models were real checkpoints that translation_lfd loaded.
    equal = rows["lfd_poe (equal-size degenerative)"]["degenerative_params"]
    quarter = rows["lfd_poe (quarter-size degenerative)"]["degenerative_params"]
    assert equal == rows[configs.BASELINE]["params"] and 0 < quarter < equal / 2
    assert (tmp_path / "work" / "degenerative-quarter.pt").is_file()
    table = out.with_name("bench.md").read_text()
    for name in ("tailr", "unlikelihood", "loss_truncation", "mixce", "error_norm_truncation"):
        assert f"| {name} |" in table and f"| {name} (fused) |" in table
    fused = rows["lfd_poe (quarter-size degenerative, fused)"]
    assert "--fused-output" in fused["flags"] and fused["degenerative_params"] == quarter
