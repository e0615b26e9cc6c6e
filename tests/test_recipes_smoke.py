"""Each recipe's run.sh in smoke mode: every stage on its tiny local corpus, real fairseq.

Checks that the script finishes, that scores.json has a row per system with the
recipe's metrics, every value finite, and that generation covered every test example
(``n``). About a minute or two per recipe on 2 CPU cores.
"""

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parent.parent
SYSTEMS = ("mle", "tailr", "lfd")
# The language-model smoke run also trains the baselines (the other smoke runs leave
# them out to keep CI short; their full runs include them).
BASELINES = ("unlikelihood", "loss_truncation", "mixce", "error_norm_truncation")


def run_recipe(
    recipe: str, workdir: Path, check: bool = True, **env
) -> subprocess.CompletedProcess:
    """``bash examples/<recipe>/run.sh`` with SMOKE=1 and this interpreter."""
    full_env = {
        **os.environ,
        "SMOKE": "1",
        "WORKDIR": str(workdir),
        "PYTHON": sys.executable,
        **env,
    }
    proc = subprocess.run(
        ["bash", str(ROOT / "examples" / recipe / "run.sh")],
        env=full_env,
        cwd=workdir.parent,
        capture_output=True,
        text=True,
        timeout=900,
    )
    if check and proc.returncode != 0:
        pytest.fail(
            f"{recipe}/run.sh failed ({proc.returncode}):\n{(proc.stdout + proc.stderr)[-6000:]}"
        )
    return proc


def scores(workdir: Path) -> dict:
    """scores.json, checked to hold only finite numbers."""
    path = workdir / "scores.json"
    assert path.is_file(), f"{path} missing"
    rows = json.loads(path.read_text())
    for name, metrics in rows.items():
        for key, value in metrics.items():
            assert isinstance(value, (int, float)) and math.isfinite(value), (
                f"{name}.{key} = {value!r}"
            )
    assert (workdir / "scores.md").read_text().startswith("| system |")
    return rows


def lines(path: Path) -> int:
    return len(path.read_text(encoding="utf-8").splitlines())


def expect(rows: dict, names, metrics, n: int) -> None:
    assert sorted(rows) == sorted(names)
    for name in names:
        missing = [m for m in metrics if m not in rows[name]]
        assert not missing, f"{name} lacks {missing}"
        assert rows[name]["n"] == n, f"{name}: {rows[name]['n']} generations for {n} test examples"


def test_translation_recipe_smoke_then_rerun_skips_every_stage(tmp_path):
    work = tmp_path / "translation"
    run_recipe("translation", work)
    rows = scores(work)
    expect(
        rows,
        SYSTEMS,
        ["bleu", "self_bleu", "distinct_2", "seq_rep_4", "mean_len"],
        lines(work / "text/test.en"),
    )

    again = run_recipe("translation", work)
    stages = [
        "data",
        "preprocess",
        "train_mle",
        "train_tailr",
        "train_degenerative",
        "train_lfd",
        "generate",
        "score",
    ]
    for stage in stages:
        assert f"== stage {stage}: already done, skipped" in again.stdout
    assert scores(work) == rows

    # A full run never reuses (or overwrites) a smoke work directory.
    full = run_recipe("translation", work, check=False, SMOKE="0")
    assert full.returncode != 0 and "holds a smoke run" in full.stderr


def test_summarization_recipe_smoke(tmp_path):
    work = tmp_path / "summarization"
    run_recipe("summarization", work)
    rows = scores(work)
    expect(
        rows,
        SYSTEMS,
        ["rouge1", "rouge2", "rougeL", "rougeLsum", "bleu", "distinct_2"],
        lines(work / "text/test.target"),
    )
    # fine-tuned from the locally pretrained tiny BART (denoising task, <mask> row dropped)
    log = (work / "checkpoints/mle/train.log").read_text()
    assert "loading pretrained model from" in log and "bart.smoke/model.pt" in log

    # Without rouge-score the score stage says so, keeps the other scores, and fails.
    blocker = tmp_path / "no_rouge"
    (blocker / "rouge_score").mkdir(parents=True)
    (blocker / "rouge_score" / "__init__.py").write_text(
        "raise ImportError('rouge_score hidden by the test')\n"
    )
    (work / ".done" / "score").unlink()
    proc = run_recipe("summarization", work, check=False, STAGES="score", PYTHONPATH=str(blocker))
    assert proc.returncode != 0
    assert "ROUGE not computed" in proc.stderr and "pip install rouge-score" in proc.stderr
    rows = scores(work)
    assert "rouge1" not in rows["mle"] and "bleu" in rows["mle"]
    assert not (work / ".done" / "score").exists()


def test_language_model_recipe_smoke(tmp_path):
    work = tmp_path / "language_model"
    run_recipe("language_model", work)
    rows = scores(work)
    names = [f"{s}-{d}" for s in SYSTEMS + BASELINES for d in ("greedy", "nucleus")]
    logs = {b: (work / f"checkpoints/{b}/train.log").read_text() for b in BASELINES}
    for b in BASELINES:
        assert f"--criterion {b}" in logs[b]
    # loss_truncation truncates after its 40-sequence hot start; ENT after its warm-up
    assert re.search(r"lt_kept_ratio 0\.\d+", logs["loss_truncation"])
    assert re.search(r"ent_active 1 ", logs["error_norm_truncation"])
    metrics = ["test_ppl", "rep_16", "wrep_16", "seq_rep_4", "uniq", "mean_len"]
    expect(rows, names, metrics, lines(work / "prefixes/prefix.tokens"))
    for name in names:  # exactly CONT_LEN (16 in smoke mode) new tokens per prefix
        assert rows[name]["mean_len"] == 16 and rows[name]["median_len"] == 16


def test_dialogue_recipe_smoke(tmp_path):
    work = tmp_path / "dialogue"
    run_recipe("dialogue", work)
    rows = scores(work)
    names = [f"{s}-greedy" for s in SYSTEMS]
    expect(
        rows,
        names,
        ["bleu", "distinct_1", "distinct_2", "self_bleu"],
        lines(work / "text/test.response"),
    )
