"""tailr and truncated_ce through real fairseq-train, fairseq-generate and fairseq-eval-lm.

(--sentence-avg, --ignore-prefix-size and --report-accuracy are checked against
independent computations inside fairseq's Trainer in test_criteria_in_trainer.py.)"""

import re
import subprocess
import sys

import pytest

import tiny
from fairseq_divgen.fairseq_commands import USER_DIR, run_fairseq

TAILR_AUTHORS_IWSLT14 = [
    "--criterion",
    "tailr",
    "--label-smoothing",
    "0.1",
    "--density-min-weight",
    "0.3",
    "--density-ratio-threshold",
    "0.1",
]


def _train(data, save_dir, extra, max_update=20, task="translation", arch=None):
    arch = tiny.TINY_TRANSFORMER if arch is None else arch
    args = [data, "--task", task, *arch, *tiny.common_train_args(save_dir, max_update), *extra]
    return run_fairseq("train", args).stdout


def _generate(data, checkpoint, extra=()):
    args = [
        data,
        "--path",
        checkpoint,
        "--user-dir",
        USER_DIR,
        "--cpu",
        "--batch-size",
        "16",
        "--gen-subset",
        "test",
        *extra,
        # fairseq drops a last batch smaller than this multiple (default 8;
        # fairseq issue #5036): 1 makes it generate for every sentence.
        "--required-batch-size-multiple",
        "1",
    ]
    return run_fairseq("generate", args).stdout


@pytest.fixture(scope="module")
def tailr_run(translation_data, tmp_path_factory):
    """The authors' IWSLT14 TaiLr flags, unchanged apart from --user-dir."""
    save = tmp_path_factory.mktemp("tailr")
    out = _train(translation_data / "bin", save, TAILR_AUTHORS_IWSLT14 + ["--report-accuracy"])
    return save, out


def test_tailr_trains_with_authors_flags_and_logs_mean_weight(tailr_run):
    _, out = tailr_run
    inner = tiny.json_logs(out, "train_inner")
    assert len(inner) == 20
    weights = [float(r["tailr_weight"]) for r in inner]
    assert all(0.3 <= w <= 1.0 for w in weights)
    assert all(float(r["loss"]) < float(r["nll_loss"]) for r in inner)  # w <= 1
    valid = tiny.json_logs(out, "valid")
    assert valid and "valid_tailr_weight" in valid[-1] and "valid_accuracy" in valid[-1]


@pytest.mark.parametrize("mode", ["beam", "sampling"])
def test_tailr_checkpoint_generates(tailr_run, translation_data, mode):
    save, _ = tailr_run
    extra = (
        ["--beam", "5"]
        if mode == "beam"
        else ["--sampling", "--sampling-topk", "5", "--beam", "1", "--seed", "3"]
    )
    hyps = tiny.hypotheses(_generate(translation_data / "bin", save / "checkpoint_last.pt", extra))
    assert sorted(h[0] for h in hyps) == list(range(30))
    assert all(h[2].strip() for h in hyps)


def _plain_torch_load(path):
    """torch.load under torch's default (weights_only) in a process without the plugin."""
    code = f"import torch; torch.load({str(path)!r})"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)


def test_eval_bleu_checkpoint_loads_in_generate_under_weights_only(translation_data, tmp_path):
    out = _train(
        translation_data / "bin",
        tmp_path,
        TAILR_AUTHORS_IWSLT14
        + [
            "--eval-bleu",
            "--eval-bleu-args",
            '{"beam": 1}',
            "--best-checkpoint-metric",
            "bleu",
            "--maximize-best-checkpoint-metric",
        ],
        max_update=8,
    )
    assert "valid_bleu" in tiny.json_logs(out, "valid")[-1]
    ckpt = tmp_path / "checkpoint_best.pt"
    # Without the plugin's allowlist, torch's safe loader refuses this checkpoint ...
    plain = _plain_torch_load(ckpt)
    assert plain.returncode != 0 and "Unsupported global" in plain.stderr
    # ... and with --user-dir, plain fairseq-generate loads it.
    hyps = tiny.hypotheses(_generate(translation_data / "bin", ckpt, ["--beam", "2"]))
    assert len(hyps) == 30


def test_truncated_ce_warmup_then_truncation(translation_data, tmp_path):
    out = _train(
        translation_data / "bin",
        tmp_path,
        [
            "--criterion",
            "truncated_ce",
            "--truncation-ratio",
            "0.5",
            "--truncation-warmup-updates",
            "5",
        ],
        max_update=12,
    )
    inner = tiny.json_logs(out, "train_inner")
    assert [int(r["num_updates"]) for r in inner] == list(range(1, 13))
    for r in inner:
        if int(r["num_updates"]) <= 5:  # updates 0..4 run plain cross-entropy
            assert r["loss"] == r["nll_loss"] and float(r["kept_ratio"]) == 1.0
        else:
            assert 0.5 <= float(r["kept_ratio"]) < 0.55  # ceil(0.5 * N) of each batch
            assert float(r["loss"]) < float(r["nll_loss"])
    valid = tiny.json_logs(out, "valid")[-1]
    assert float(valid["valid_trunc_loss"]) < float(valid["valid_nll_loss"])
    hyps = tiny.hypotheses(
        _generate(translation_data / "bin", tmp_path / "checkpoint_last.pt", ["--beam", "4"])
    )
    assert len(hyps) == 30


@pytest.mark.parametrize(
    "criterion,bound",
    [
        (TAILR_AUTHORS_IWSLT14, 14.0),
        # from scratch truncated_ce is worse than uniform on all tokens (it learns only
        # the easiest); with a warm-up of cross-entropy it is a language model first
        (
            [
                "--criterion",
                "truncated_ce",
                "--truncation-ratio",
                "0.5",
                "--truncation-warmup-updates",
                "24",
            ],
            16.0,
        ),
    ],
    ids=["tailr", "truncated_ce"],
)
def test_language_model_trains_and_evaluates(lm_data, tmp_path, criterion, bound):
    out = _train(
        lm_data / "bin",
        tmp_path,
        criterion,
        max_update=30,
        task="language_modeling",
        arch=tiny.TINY_LM,
    )
    assert len(tiny.json_logs(out, "train_inner")) == 30
    ev = run_fairseq(
        "eval-lm",
        [
            lm_data / "bin",
            "--path",
            tmp_path / "checkpoint_last.pt",
            *tiny.EVAL_LM,
        ],
    ).stdout
    ppl = float(re.search(r"Perplexity: ([0-9.]+)", ev).group(1))
    print("eval-lm perplexity", ppl)
    # Uniform over the 24 words would be 24 (the chain's own perplexity is about 4).
    # The chain gives every word 4 equally likely successors, so no model averages more
    # than 1/4 on them: a perplexity near 1 would mean eval-lm scored the wrong tokens.
    assert 3.0 < ppl < bound


def test_divgen_score_reads_real_generate_output(tailr_run, translation_data, tmp_path, capsys):
    from fairseq_divgen.scoring.cli import main as divgen_score

    save, _ = tailr_run
    out = _generate(
        translation_data / "bin",
        save / "checkpoint_last.pt",
        ["--beam", "3", "--nbest", "2", "--scoring", "sacrebleu"],
    )
    gen = tmp_path / "gen.txt"
    gen.write_text(out)
    assert divgen_score([str(gen), "--json", str(tmp_path / "s.json")]) == 0
    import json

    row = json.loads((tmp_path / "s.json").read_text())[str(gen)]
    assert row["n"] == 30  # best of the 2-best per sentence
    # fairseq's own sacrebleu scorer on the same hypotheses prints the same corpus BLEU.
    fairseq_bleu = float(re.search(r"BLEU = ([0-9.]+)", out).group(1))
    assert row["bleu"] == pytest.approx(fairseq_bleu, abs=0.01)
    assert 0 < row["distinct_1"] <= 1 and row["uniq"] > 0
