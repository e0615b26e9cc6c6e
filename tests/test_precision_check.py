"""scripts/precision_check.py: its corpus and its reading of fairseq's logs.

The script itself needs a GPU (and its --dry-run takes about a minute of CPU, too
long for CI); these checks cover what it builds and how it reads fairseq-train's
output. The log lines below use the formats of fairseq 0.12: fairseq_cli/train.py's
``%(asctime)s | %(levelname)s | %(name)s | %(message)s``, the JSON progress bar,
and the overflow messages of fairseq/trainer.py and fairseq/optim/amp_optimizer.py.
"""

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "precision_check.py"
spec = importlib.util.spec_from_file_location("precision_check", SCRIPT)
check = importlib.util.module_from_spec(spec)
spec.loader.exec_module(check)

T = "2026-01-01 00:00:00 | INFO"
FP16_LOG = f"""{T} | fairseq.trainer | NOTE: gradient overflow detected, ignoring gradient, setting loss scale to: 64.0
{T} | train_inner | {{"epoch": 1, "update": 0.4, "loss": "9.5", "nll_loss": "9.1", "loss_scale": "64", "num_updates": "10"}}
{T} | fairseq.trainer | NOTE: gradient overflow detected, ignoring gradient, setting loss scale to: 32.0
{T} | train_inner | {{"epoch": 1, "update": 0.8, "loss": "8.25", "nll_loss": "8.0", "loss_scale": "32", "num_updates": "20"}}
{T} | valid | {{"epoch": 1, "valid_loss": "8.0", "valid_nll_loss": "7.75", "valid_num_updates": "20"}}
{T} | train | {{"epoch": 1, "train_loss": "8.9", "train_nll_loss": "8.5", "train_num_updates": "20"}}
"""
AMP_LOG = f"""{T} | fairseq.optim.amp_optimizer | AMP: overflow detected, setting scale to to 64.0
{T} | fairseq.optim.amp_optimizer | AMP: overflow detected, setting scale to to 32.0
{T} | fairseq.optim.amp_optimizer | AMP: overflow detected, setting scale to to 16.0
{T} | fairseq.trainer | AMP: skipping this batch.
{T} | train_inner | {{"epoch": 1, "loss": "nan", "nll_loss": "7.0", "loss_scale": "16", "num_updates": "5"}}
"""


def test_reads_final_values_and_counts_fp16_overflows():
    row = check.summarize(FP16_LOG, 0)
    assert row == {
        "status": "ok",
        "updates": 20,
        "final_loss": 8.25,
        "final_nll_loss": 8.0,
        "final_valid_nll_loss": 7.75,
        "nan_or_inf": False,
        "final_loss_scale": 32.0,
        "overflows": 2,
        "amp_skipped_batches": 0,
    }


def test_counts_amp_overflows_and_flags_nan():
    row = check.summarize(AMP_LOG, 0)
    assert (row["overflows"], row["amp_skipped_batches"], row["nan_or_inf"]) == (3, 1, True)


def test_failed_run_reports_the_error():
    log = FP16_LOG + f"{T} | root | FloatingPointError: Minimum loss scale reached (0.0001).\n"
    assert check.summarize(log, 1)["status"].startswith("failed (1): ")
    assert "Minimum loss scale reached" in check.summarize(log, 1)["status"]


def test_corpus_covers_the_vocabulary_with_a_consistent_renaming(tmp_path):
    check.write_corpus(tmp_path, vocab=50, sizes=(30, 5, 5))
    src = [line.split() for line in (tmp_path / "train.src").read_text().splitlines()]
    tgt = [line.split() for line in (tmp_path / "train.tgt").read_text().splitlines()]
    assert len({w for s in src for w in s}) == 50 and len({w for t in tgt for w in t}) == 50
    mapping = {}
    for s, t in zip(src, tgt):
        assert len(s) == len(t)
        for a, b in zip(s, reversed(t)):
            assert mapping.setdefault(a, b) == b  # one target word per source word
    assert len(set(mapping.values())) == 50  # and a different one for each
