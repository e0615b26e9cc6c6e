"""divgen-demo: the oracle and its sampler, and the tiny experiment end to end with real fairseq."""

import json
import math
import re
import shutil
import subprocess
import sys

import pytest
import torch

from fairseq_divgen.synthetic import lm, oracle

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DEMO = [sys.executable, "-m", "fairseq_divgen.demo"]
TINY_ORACLE = oracle.OracleSpec(
    vocab=30, embed_dim=8, hidden=8, max_len=10, mean_length=5.0, target_entropy=2.0
)


@pytest.fixture(scope="module")
def tiny_oracle(tmp_path_factory):
    work = tmp_path_factory.mktemp("oracle")
    stats = oracle.build_oracle(work, TINY_ORACLE, calibration_samples=200)
    model, dictionary = lm.load_model(work / "oracle.pt")
    return work, stats, model, dictionary


def test_oracle_is_a_fairseq_checkpoint_that_never_emits_special_symbols(tiny_oracle):
    _work, stats, model, d = tiny_oracle
    assert len(d) == 30 + d.nspecial
    tokens = torch.tensor([[d.eos(), d.index("w3"), d.index("w7")]])
    lprobs = torch.log_softmax(model.decoder(tokens)[0].float(), dim=-1)
    for banned in (d.bos(), d.pad(), d.unk()):
        assert torch.all(lprobs[..., banned].exp() == 0)
    assert abs(stats["entropy"] - TINY_ORACLE.target_entropy) < 0.3
    assert 0 < stats["sample_mean_length"] <= TINY_ORACLE.max_len


def test_sampler_draws_first_tokens_from_the_model_distribution(tiny_oracle):
    _work, _stats, model, d = tiny_oracle
    n = 20000
    samples = lm.sample(model, d, n, max_len=1, seed=5, batch_size=n)
    counts = torch.bincount(torch.tensor([s[0] for s in samples]), minlength=len(d)).float()
    # independent: the next-token distribution after eos, eos itself excluded (no empty samples)
    logits = model.decoder(torch.tensor([[d.eos()]]))[0][0, -1].float()
    logits[[d.bos(), d.pad(), d.unk(), d.eos()]] = float("-inf")
    expected = torch.softmax(logits, dim=-1)
    assert counts[[d.bos(), d.pad(), d.unk(), d.eos()]].sum() == 0
    # every frequency within 5 binomial standard deviations of its probability
    sd = (expected * (1 - expected) / n).sqrt()
    assert torch.all((counts / n - expected).abs() <= 5 * sd + 1e-4)


def test_eval_lm_scores_samples_with_the_oracle_exactly(tiny_oracle, tmp_path):
    from fairseq_divgen.fairseq_commands import USER_DIR, run_fairseq

    work, _stats, model, d = tiny_oracle
    samples = lm.sample(model, d, 30, TINY_ORACLE.max_len, seed=2)
    (tmp_path / "s.txt").write_text("\n".join(lm.to_text(d, samples)) + "\n")
    run_fairseq(
        "preprocess",
        [
            "--only-source",
            "--srcdict",
            work / "dict.txt",
            "--testpref",
            tmp_path / "s.txt",
            "--destdir",
            tmp_path / "bin",
        ],
    )
    out = run_fairseq(
        "eval-lm",
        [
            tmp_path / "bin",
            "--path",
            work / "oracle.pt",
            "--user-dir",
            USER_DIR,
            "--cpu",
            "--sample-break-mode",
            "eos",
            "--tokens-per-sample",
            TINY_ORACLE.max_len + 2,
            "--required-batch-size-multiple",
            1,
        ],
    ).stdout
    loss2 = float(re.search(r"Loss \(base 2\): ([0-9.]+)", out).group(1))
    # independent: teacher-forced log-probabilities of each sample followed by eos
    nll, count = 0.0, 0
    for s in samples:
        inp = torch.tensor([[d.eos(), *s]])
        tgt = torch.tensor([*s, d.eos()])
        lp = torch.log_softmax(model.decoder(inp)[0][0].double(), dim=-1)
        nll -= lp[torch.arange(len(tgt)), tgt].sum().item()
        count += len(tgt)
    assert loss2 == pytest.approx(nll / count / math.log(2), abs=1e-3)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("demo") / "run"
    first = subprocess.run(
        [*DEMO, "--size", "tiny", "--workdir", str(work)], capture_output=True, text=True
    )
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    return work, first.stdout


def test_tiny_demo_fills_every_column_with_finite_numbers(tiny_run):
    work, stdout = tiny_run
    results = json.loads((work / "results.json").read_text())
    assert set(results["rows"]) == {"oracle", "mle", "tailr", "lfd", "degenerative"}
    for name, row in results["rows"].items():
        for key in ("ppl_oracle", "ppl_test", "bleu4", "self_bleu4", "distinct_2", "seq_rep_4"):
            assert math.isfinite(row[key]), (name, key, row[key])
        assert row["ppl_oracle"] > 1 and row["ppl_test"] > 1
    assert "| MLE (label_smoothed_cross_entropy) |" in (work / "results.md").read_text()
    assert (work / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # progress: stage names and fairseq-train's own log lines
    assert "== [3/17] train-mle" in stdout and "| INFO | fairseq_cli.train |" in stdout
    # the oracle's statistics are reported for the reader
    assert "entropy" in stdout and results["oracle"]["entropy"] > 0


def test_rerun_skips_finished_stages_and_keeps_results(tiny_run):
    work, _ = tiny_run
    before = (work / "mle" / "checkpoint_last.pt").stat().st_mtime_ns
    again = subprocess.run(
        [*DEMO, "--size", "tiny", "--workdir", str(work)], capture_output=True, text=True
    )
    assert again.returncode == 0, again.stderr[-2000:]
    assert again.stdout.count("done earlier, skipped") == 16
    assert "fairseq_cli.train" not in again.stdout
    assert (work / "mle" / "checkpoint_last.pt").stat().st_mtime_ns == before


def test_other_settings_on_the_same_workdir_are_refused(tiny_run):
    work, _ = tiny_run
    settings = (work / "settings.json").read_text()
    out = subprocess.run(
        [*DEMO, "--size", "tiny", "--workdir", str(work), "--tailr-gamma", "0.5"],
        capture_output=True,
        text=True,
    )
    assert out.returncode != 0
    assert "other settings" in out.stderr and "--workdir" in out.stderr
    assert (work / "settings.json").read_text() == settings


@pytest.mark.parametrize(
    "flag,value",
    [
        ("--tailr-gamma", "5"),
        ("--tailr-min-weight", "-1"),
        ("--truncation-ratio", "0"),
        ("--mle-weight", "inf"),
    ],
)
def test_bad_method_flags_are_refused_before_anything_is_built(tmp_path, flag, value):
    from fairseq_divgen import demo

    work = tmp_path / "demo"
    with pytest.raises(SystemExit) as exit_:
        demo.main(["--size", "tiny", "--workdir", str(work), flag, value])
    assert exit_.value.code == 2 and not work.exists()


def test_a_foreign_nonempty_workdir_is_refused_untouched(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    out = subprocess.run(
        [*DEMO, "--size", "tiny", "--workdir", str(tmp_path)], capture_output=True, text=True
    )
    assert out.returncode != 0 and "--workdir" in out.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_sweep_trains_and_scores_the_baselines(tiny_run, tmp_path, monkeypatch):
    """``--sweep``'s baseline rows (one setting each here; the real grid has two), on a
    copy of the tiny run: the main run's models are reused, the baselines trained."""
    from fairseq_divgen.synthetic import sweep
    from fairseq_divgen.synthetic.experiment import Experiment
    from fairseq_divgen.synthetic.sizes import SIZES, Methods

    work = tmp_path / "run"
    shutil.copytree(tiny_run[0], work)
    monkeypatch.setattr(sweep, "TAILR_GRID", [])
    monkeypatch.setattr(sweep, "LFD_GRID", [])
    for grid in ("UNLIKELIHOOD_GRID", "LOSS_TRUNCATION_GRID", "MIXCE_GRID", "ENT_GRID"):
        monkeypatch.setattr(sweep, grid, getattr(sweep, grid)[-1:])
    log = []
    table = sweep.run_sweep(Experiment(work, SIZES["tiny"], Methods(), log=log.append))
    rows = json.loads((work / "sweep.json").read_text())
    expected = [
        "Unlikelihood (unlikelihood) alpha=1",
        "Loss truncation (loss_truncation) dropc=0.4, min count=300, recompute=300",
        "MixCE (mixce) eta=0.5",
        "ENT (error_norm_truncation) threshold=1.3, start=4",
    ]
    assert (
        list(rows)[-4:] == expected and len(rows) == 5 + 4
    )  # oracle, the 4 main models, baselines
    for label in expected:
        assert all(math.isfinite(v) for v in rows[label].values()), label
        assert f"| {label} |" in table
    assert not any("train-mle" in line for line in log)  # the main run's models are reused
    train_log = (work / "train-loss_truncation-c0.4.log").read_text()
    kept = [float(v) for v in re.findall(r"lt_kept_ratio (\S+?),? ", train_log)]
    assert kept and min(kept) < 1  # it did truncate within 12 updates
