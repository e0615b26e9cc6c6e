"""unlikelihood, mixce, loss_truncation and error_norm_truncation through real
fairseq-train, fairseq-generate and fairseq-eval-lm."""

import math
import re

import fairseq  # noqa: F401  (the plugin registers, and allowlists checkpoints for torch.load)
import pytest

import tiny
import workers
from fairseq_divgen.fairseq_commands import USER_DIR

LS = ["--label-smoothing", "0.1"]
# Each criterion at the setting where it is plain MLE, and the fairseq criterion it equals.
AS_MLE = {
    "unlikelihood": (["--criterion", "unlikelihood", "--rank-alpha", "0"], "cross_entropy"),
    "mixce": (["--criterion", "mixce", "--mixing-ratio", "1"], "cross_entropy"),
    "loss_truncation": (
        ["--criterion", "loss_truncation", "--dropc", "0", "--min-count", "0", *LS],
        "label_smoothed_cross_entropy",
    ),
    "error_norm_truncation": (
        [
            "--criterion",
            "error_norm_truncation",
            "--token-prune-threshold",
            repr(math.sqrt(2)),
            *LS,
        ],
        "label_smoothed_cross_entropy",
    ),
}
MLE_FLAGS = {
    "cross_entropy": ["--criterion", "cross_entropy"],
    "label_smoothed_cross_entropy": ["--criterion", "label_smoothed_cross_entropy", *LS],
}
# Each criterion at a setting that changes training, and the field it logs.
ACTIVE = {
    "unlikelihood": (["--criterion", "unlikelihood", "--rank-alpha", "1.0"], "ul_penalty"),
    "mixce": (["--criterion", "mixce", "--mixing-ratio", "0.1"], "mixce_weight"),
    "loss_truncation": (
        [
            "--criterion",
            "loss_truncation",
            "--dropc",
            "0.4",
            "--min-count",
            "100",
            "--recompute",
            "100",
            *LS,
        ],
        "lt_kept_ratio",
    ),
    "error_norm_truncation": (
        [
            "--criterion",
            "error_norm_truncation",
            "--token-prune-threshold",
            "1.0",
            "--start-prune-iteration",
            "3",
            *LS,
        ],
        "ent_kept_ratio",
    ),
}
UPDATES = 10


GENERATE = [
    "--task",
    "translation",
    "--user-dir",
    USER_DIR,
    "--cpu",
    "--batch-size",
    "16",
    "--gen-subset",
    "test",
    "--beam",
    "4",
    "--required-batch-size-multiple",
    "1",
]
# SGD: the same gradients give the same parameters up to rounding (Adam's first steps,
# about lr * sign(g), would turn rounding-level differences into lr-sized ones).
SGD = ["--optimizer", "sgd", "--lr", "0.5"]
PREFIX = ["--sentence-avg", "--ignore-prefix-size", "1", "--report-accuracy"]


def _args(data, save_dir, extra, max_update=UPDATES, task="translation", arch=None):
    arch = tiny.TINY_TRANSFORMER if arch is None else arch
    return [data, "--task", task, *arch, *tiny.common_train_args(save_dir, max_update), *extra]


@pytest.fixture(scope="module")
def runs(translation_data, lm_data, tmp_path_factory):
    """Every run of this module, planned here and made in one process
    (scripts/fairseq_worker.py)."""
    root = tmp_path_factory.mktemp("baselines")
    mt, lm = translation_data / "bin", lm_data / "bin"
    plan = workers.Plan(root)
    plan.saves = {}

    def add(name, save, args, **kw):
        plan.saves[name] = save
        plan.add(name, args, **kw)

    for name, flags in MLE_FLAGS.items():
        add(name, root / name, _args(mt, root / name, flags + SGD, max_update=4))
    for name, (flags, _) in AS_MLE.items():
        add(("as mle", name), root / f"mle-{name}", _args(mt, root / f"mle-{name}", flags + SGD, 4))
    for name, (flags, _) in ACTIVE.items():
        save = root / name
        add(name + " active", save, _args(mt, save, flags + ["--report-accuracy"]))
        plan.add(
            (name, "generate"),
            [mt, "--path", save / "checkpoint_last.pt", *GENERATE],
            tool="generate",
        )
    for name in ("unlikelihood", "loss_truncation"):
        save = root / f"prefix-{name}"
        add((name, "prefix"), save, _args(mt, save, ACTIVE[name][0] + PREFIX, max_update=6))
    save = root / "lm-unlikelihood"
    add(
        "lm",
        save,
        _args(lm, save, ACTIVE["unlikelihood"][0], 15, "language_modeling", tiny.TINY_LM),
    )
    plan.add(
        ("lm", "eval-lm"),
        [lm, "--path", save / "checkpoint_last.pt", *tiny.EVAL_LM],
        tool="eval-lm",
    )
    plan.execute()
    return plan


@pytest.mark.parametrize("name", list(AS_MLE))
def test_mle_setting_trains_as_fairseqs_criterion(runs, name):
    # The same losses and gradients as fairseq's criterion, computed from the logits in
    # closed form instead of through log_softmax: equal to rounding, not bit for bit.
    reference = AS_MLE[name][1]
    out, ref_out = runs.output(("as mle", name)), runs.output(reference)
    ours, ref = tiny.json_logs(out, "train_inner"), tiny.json_logs(ref_out, "train_inner")
    assert len(ours) == len(ref) == 4
    for a, b in zip(ours, ref):
        assert a["loss"] == b["loss"]
        # nll_loss is the plain NLL: cross_entropy logs it as its loss
        assert a["nll_loss"] == b.get("nll_loss", b["loss"])
        assert a["gnorm"] == b["gnorm"]
    diff = workers.max_abs_param_diff(
        runs.saves[("as mle", name)] / "checkpoint_last.pt",
        runs.saves[reference] / "checkpoint_last.pt",
    )
    print(f"{name}: max abs parameter difference from {reference}: {diff:.3g}")
    assert diff <= 1e-6


@pytest.mark.parametrize("name", list(ACTIVE))
def test_trains_logs_its_fields_and_generates(runs, name):
    key = ACTIVE[name][1]
    out = runs.output(name + " active")
    inner = tiny.json_logs(out, "train_inner")
    assert [int(r["num_updates"]) for r in inner] == list(range(1, UPDATES + 1))
    assert all(math.isfinite(float(r["loss"])) and key in r for r in inner)
    valid = tiny.json_logs(out, "valid")[-1]
    assert f"valid_{key}" in valid and "valid_accuracy" in valid
    if name == "unlikelihood":  # the penalty adds to the NLL
        assert all(
            float(r["loss"]) > float(r["nll_loss"]) and float(r["ul_candidates"]) > 0 for r in inner
        )
    if name == "mixce":  # weights eta + (1 - eta) p in [0.1, 1]
        assert all(
            0.1 <= float(r["mixce_weight"]) <= 1 and float(r["loss"]) < float(r["nll_loss"])
            for r in inner
        )
    if name == "loss_truncation":  # MLE until 100 sequence losses were seen, then truncation
        kept = [float(r["lt_kept_ratio"]) for r in inner]
        assert kept[0] == 1 and min(kept) < 1 and "lt_cutoff" in inner[-1]
    if name == "error_norm_truncation":  # MLE while at most 3 updates are done, as the authors
        assert [float(r["ent_active"]) for r in inner] == [0] * 4 + [1] * (UPDATES - 4)
        assert all(float(r["ent_kept_ratio"]) < 1 for r in inner[4:])
        assert float(valid["valid_ent_active"]) == 0  # validation: the untruncated objective
    hyps = tiny.hypotheses(runs.output((name, "generate")))
    assert sorted(h[0] for h in hyps) == list(range(30))


@pytest.mark.parametrize("name", ["unlikelihood", "loss_truncation"])
def test_sentence_avg_ignore_prefix_accuracy(runs, name):
    key = ACTIVE[name][1]
    out = runs.output((name, "prefix"))
    inner = tiny.json_logs(out, "train_inner")
    assert len(inner) == 6 and all("accuracy" in r and key in r for r in inner)
    assert "valid_accuracy" in tiny.json_logs(out, "valid")[-1]


def test_unlikelihood_language_model_trains_and_evaluates(runs):
    assert len(tiny.json_logs(runs.output("lm"), "train_inner")) == 15
    ev = runs.output(("lm", "eval-lm"))
    ppl = float(re.search(r"Perplexity: ([0-9.]+)", ev).group(1))
    print("eval-lm perplexity", ppl)
    # Uniform over the 24 words would be 24 (the chain's own perplexity is about 4).
    # The chain gives every word 4 equally likely successors, so no model averages more
    # than 1/4 on them: a perplexity near 1 would mean eval-lm scored the wrong tokens.
    assert 3.0 < ppl < 24.0
