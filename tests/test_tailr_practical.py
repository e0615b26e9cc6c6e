"""TaiLr in practice through real fairseq-train: the gamma warm-up as logged, and a
warm start from an MLE checkpoint with fairseq's own --finetune-from-model."""

import hashlib
import re

import pytest
import torch

import tiny
from fairseq_divgen.fairseq_commands import USER_DIR, run_fairseq

TAILR = [
    "--criterion",
    "tailr",
    "--label-smoothing",
    "0.1",
    "--density-ratio-threshold",
    "0.1",
    "--density-min-weight",
    "0.3",
]


def _train(data, save, flags, max_update):
    args = [
        data,
        "--task",
        "translation",
        *tiny.TINY_TRANSFORMER,
        *tiny.common_train_args(save, max_update),
        *flags,
    ]
    return run_fairseq("train", args).stdout


def test_logged_gamma_and_weight_follow_the_warmup(translation_data, tmp_path):
    out = _train(
        translation_data / "bin", tmp_path, TAILR + ["--density-ratio-warmup-updates", "10"], 14
    )
    inner = tiny.json_logs(out, "train_inner")
    assert [int(r["num_updates"]) for r in inner] == list(range(1, 15))
    for r in inner:
        done_before = int(r["num_updates"]) - 1  # the record of update k ran with k - 1 done
        assert float(r["tailr_gamma"]) == pytest.approx(0.1 * min(done_before, 10) / 10, abs=1e-9)
    assert float(inner[0]["tailr_weight"]) == 1.0  # gamma 0: exactly MLE
    assert all(float(r["tailr_weight"]) < 1.0 for r in inner[1:])
    assert float(tiny.json_logs(out, "valid")[-1]["valid_tailr_gamma"]) == pytest.approx(0.1)


def _sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


# One batch holds the whole training set (300 pairs), and no dropout: the first TaiLr
# update's logged nll_loss is then the training-set NLL of the weights it started from.
WHOLE_TRAIN_SET = [
    "--batch-size",
    "300",
    "--max-tokens",
    "100000",
    "--required-batch-size-multiple",
    "1",
    "--dropout",
    "0",
]


def test_tailr_warm_started_from_mle_with_finetune_from_model(translation_data, tmp_path):
    data = translation_data / "bin"
    mle_ckpt = tmp_path / "mle" / "checkpoint_last.pt"
    _train(
        data,
        tmp_path / "mle",
        ["--criterion", "label_smoothed_cross_entropy", "--label-smoothing", "0.1"],
        20,
    )
    mle_sha = _sha256(mle_ckpt)

    # The MLE weights' NLL on the training set, from fairseq-validate (eval mode).
    val = run_fairseq(
        "validate",
        [
            data,
            "--task",
            "translation",
            "--path",
            mle_ckpt,
            "--user-dir",
            USER_DIR,
            "--cpu",
            "--valid-subset",
            "train",
            *WHOLE_TRAIN_SET[:6],
        ],
    ).stdout
    mle_nll = float(re.search(r"valid on 'train' subset \|.*\| nll_loss ([0-9.]+)", val).group(1))
    dict_size = len((data / "dict.tgt.txt").read_text().splitlines()) + 4
    assert mle_nll < 0.8 * torch.log2(torch.tensor(float(dict_size))).item()  # clearly trained

    out = _train(
        data, tmp_path / "tailr", TAILR + WHOLE_TRAIN_SET + ["--finetune-from-model", mle_ckpt], 5
    )
    assert "loading pretrained model from" in out
    inner = tiny.json_logs(out, "train_inner")
    assert [int(r["num_updates"]) for r in inner] == [1, 2, 3, 4, 5]  # the counter restarted
    assert float(inner[0]["nll_loss"]) == pytest.approx(mle_nll, abs=2e-3)  # MLE weights
    ckpt = torch.load(tmp_path / "tailr" / "checkpoint_last.pt", map_location="cpu")
    assert ckpt["optimizer_history"][-1]["num_updates"] == 5
    assert ckpt["optimizer_history"][-1]["criterion_name"] == "TailrCriterion"
    assert _sha256(mle_ckpt) == mle_sha  # the MLE checkpoint is untouched

    gen = run_fairseq(
        "generate",
        [
            data,
            "--path",
            tmp_path / "tailr" / "checkpoint_last.pt",
            "--user-dir",
            USER_DIR,
            "--cpu",
            "--beam",
            "5",
            "--batch-size",
            "16",
            "--gen-subset",
            "test",
            "--required-batch-size-multiple",
            "1",
        ],
    ).stdout
    hyps = tiny.hypotheses(gen)
    assert sorted(h[0] for h in hyps) == list(range(30)) and all(h[2].strip() for h in hyps)
