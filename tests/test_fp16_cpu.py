"""Every criterion under fairseq's real fp16 training, on the CPU.

fairseq's FP16Optimizer (``--fp16 --fp16-no-flatten-grads``) and
MemoryEfficientFP16Optimizer (``--memory-efficient-fp16``) run on a CPU: the model
is halved, the loss scale is dynamic. tailr and lfd_poe also run with
``--fused-output``. The runs go through
``scripts/fairseq_worker.py`` (all of them in one process) or
``scripts/cpu_fp16_train.py``, fairseq-train's own entry point, with the one CUDA
call of fairseq's overflow branch made harmless in that process (see its docstring);
the first test shows what an unmodified fairseq-train does at an overflow.
"""

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from fairseq import checkpoint_utils

import tiny
import workers
from fairseq_divgen.fairseq_commands import USER_DIR, run_fairseq

ROOT = Path(__file__).resolve().parent.parent
WRAPPER = ROOT / "scripts" / "cpu_fp16_train.py"
MODES = {
    "fp16": ["--fp16", "--fp16-no-flatten-grads"],
    "memory-efficient-fp16": ["--memory-efficient-fp16"],
}
OVERFLOW = "gradient overflow detected"
LS = ["--label-smoothing", "0.1"]
CRITERIA = {
    "label_smoothed_cross_entropy": (
        "translation",
        ["--criterion", "label_smoothed_cross_entropy", *LS],
        (),
    ),
    "tailr": (
        "translation",
        [
            "--criterion",
            "tailr",
            *LS,
            "--density-ratio-threshold",
            "0.1",
            "--density-min-weight",
            "0.3",
        ],
        ("tailr_weight", "tailr_gamma"),
    ),
    "truncated_ce": (
        "translation",
        ["--criterion", "truncated_ce", "--truncation-ratio", "0.5"],
        ("trunc_loss", "kept_ratio"),
    ),
    "lfd_poe": (
        "translation_lfd",
        ["--criterion", "lfd_poe", *LS, "--mle-weight", "1"],
        ("poe_loss", "eos_nll"),
    ),
}
# The fused output path (--fused-output) keeps its gradients in fp32 until fairseq's loss
# scale is applied, then casts them to the half-precision parameters.
for _name in ("tailr", "lfd_poe"):
    _task, _flags, _fields = CRITERIA[_name]
    CRITERIA[_name + " (fused)"] = (_task, [*_flags, "--fused-output"], _fields)
BASELINES = {
    "unlikelihood": (["--criterion", "unlikelihood", "--rank-alpha", "1"], ("ul_penalty",)),
    "mixce": (["--criterion", "mixce", "--mixing-ratio", "0.5"], ("mixce_weight",)),
    "loss_truncation": (
        ["--criterion", "loss_truncation", "--min-count", "20", "--recompute", "20"],
        ("lt_kept_ratio",),
    ),
    "error_norm_truncation": (
        ["--criterion", "error_norm_truncation", "--token-prune-threshold", "1.3"],
        ("ent_kept_ratio",),
    ),
}


def train_fp16(args, check=True):
    """fairseq-train through the CPU fp16 wrapper; returns its combined output."""
    cmd = [sys.executable, str(WRAPPER), *[str(a) for a in args]]
    # one intra-op thread: the tiny model gains nothing from more, and on a busy machine a
    # second thread mostly waits
    env = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    )
    if check and result.returncode != 0:
        raise AssertionError(result.stdout[-3000:])
    return result


def _args(data, save, task, arch, flags, mode, max_update=8):
    return [
        data,
        "--task",
        task,
        *arch,
        *tiny.common_train_args(save, max_update),
        "--cpu",
        *MODES[mode],
        *flags,
    ]


def _check_finite_and_logged(out, fields):
    inner = tiny.json_logs(out, "train_inner")
    assert inner, out[-2000:]
    for r in inner:
        assert math.isfinite(float(r["loss"])) and math.isfinite(float(r["nll_loss"])), r
        assert "loss_scale" in r, r
        for f in fields:
            assert f in r, (f, r)
    valid = tiny.json_logs(out, "valid")
    assert valid and math.isfinite(float(valid[-1]["valid_loss"]))
    if "poe_loss" in fields:  # the frozen model's own NLL, a validation diagnostic
        assert math.isfinite(float(valid[-1]["valid_degen_nll_loss"]))
    return inner


GENERATE = [
    "--task",
    "translation",
    "--user-dir",
    USER_DIR,
    "--cpu",
    "--beam",
    "2",
    "--batch-size",
    "16",
    "--gen-subset",
    "test",
    "--required-batch-size-multiple",
    "1",
]


@pytest.fixture(scope="module")
def runs(translation_data, lm_data, tmp_path_factory):
    """Every fp16 run of this module, planned here and made in one process
    (scripts/fairseq_worker.py, which makes fairseq's overflow branch work without CUDA as
    scripts/cpu_fp16_train.py does): the stage-1 model first, then each case."""
    root = tmp_path_factory.mktemp("fp16")
    plan = workers.Plan(root)
    mt, lm = translation_data / "bin", lm_data / "bin"
    degen = root / "degen16"
    plan.add(
        "degenerative",
        _args(mt, degen, "translation", tiny.TINY_TRANSFORMER, CRITERIA["truncated_ce"][1], "fp16"),
    )
    for name, (task, flags, _) in CRITERIA.items():
        if task == "translation_lfd":
            flags = [*flags, "--degenerative-checkpoint", degen / "checkpoint_last.pt"]
        for mode in MODES:
            save = root / f"{name}-{mode}"
            plan.add((name, mode), _args(mt, save, task, tiny.TINY_TRANSFORMER, flags, mode))
            if mode == "fp16" and name in ("tailr", "lfd_poe"):
                plan.add(
                    (name, mode, "generate"),
                    [mt, "--path", save / "checkpoint_last.pt", *GENERATE],
                    tool="generate",
                )
    for name, (flags, _) in BASELINES.items():
        plan.add(
            (name, "fp16"),
            _args(mt, root / name, "translation", tiny.TINY_TRANSFORMER, flags, "fp16"),
        )
    for mode in MODES:
        lm_degen, lfd = root / f"lm-degen-{mode}", root / f"lm-lfd-{mode}"
        plan.add(
            ("lm degenerative", mode),
            _args(
                lm, lm_degen, "language_modeling", tiny.TINY_LM, CRITERIA["truncated_ce"][1], mode
            ),
        )
        flags = [
            *CRITERIA["lfd_poe"][1],
            "--degenerative-checkpoint",
            lm_degen / "checkpoint_last.pt",
        ]
        plan.add(
            ("lm lfd", mode), _args(lm, lfd, "language_modeling_lfd", tiny.TINY_LM, flags, mode)
        )
        plan.add(
            ("lm lfd", mode, "eval-lm"),
            [lm, "--path", lfd / "checkpoint_last.pt", *tiny.EVAL_LM],
            tool="eval-lm",
        )
    plan.execute()
    plan.degenerative = degen / "checkpoint_last.pt"
    return plan


@pytest.fixture(scope="module")
def fp16_degenerative(runs):
    """A stage-1 model trained under --fp16 (the first planned run)."""
    runs.output("degenerative")
    return runs.degenerative


# What torch says when ``.cuda()`` finds no GPU: a CPU-only build, a CUDA build without a
# driver, a CUDA build with a driver and no device.
NO_GPU = (
    "Torch not compiled with CUDA enabled",
    "Found no NVIDIA driver",
    "No CUDA GPUs are available",
)


@pytest.mark.skipif(torch.cuda.is_available(), reason="with a GPU, fairseq's .cuda() call succeeds")
def test_unmodified_fairseq_train_stops_at_the_first_overflow(translation_data, tmp_path):
    # A loss scale of 2^24 overflows fp16 gradients at the first step; fairseq's overflow
    # branch then calls .cuda(), which fails without a GPU whichever torch build is installed.
    args = _args(
        translation_data / "bin",
        tmp_path,
        "translation",
        tiny.TINY_TRANSFORMER,
        [*CRITERIA["label_smoothed_cross_entropy"][1], "--fp16-init-scale", str(2**24)],
        "fp16",
    )
    plain = run_fairseq("train", args, check=False)
    assert plain.returncode != 0
    assert OVERFLOW in plain.stdout and "torch.tensor(0.0).cuda()" in plain.stdout
    assert any(message in plain.stdout for message in NO_GPU)
    wrapped = train_fp16(args).stdout  # the same run survives: steps skipped, scale halved
    assert wrapped.count(OVERFLOW) >= 2
    scales = [float(r["loss_scale"]) for r in tiny.json_logs(wrapped, "train_inner")]
    assert scales[-1] < 2**24 and all(math.isfinite(s) for s in scales)


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("name", list(CRITERIA))
def test_criterion_trains_under_cpu_fp16(name, mode, runs):
    out = runs.output((name, mode))
    _check_finite_and_logged(out, CRITERIA[name][2])
    assert "computes the unfused loss" not in out  # a fused run took the fused path
    if mode == "fp16" and name in ("tailr", "lfd_poe"):
        assert len(tiny.hypotheses(runs.output((name, mode, "generate")))) == 30


@pytest.mark.parametrize("name", list(BASELINES))
def test_baseline_trains_under_cpu_fp16(name, runs):
    _check_finite_and_logged(runs.output((name, "fp16")), BASELINES[name][1])


@pytest.mark.parametrize("mode", list(MODES))
def test_lfd_language_model_under_cpu_fp16_then_eval_lm(mode, runs):
    runs.output(("lm degenerative", mode))
    _check_finite_and_logged(runs.output(("lm lfd", mode)), CRITERIA["lfd_poe"][2])
    assert "Perplexity" in runs.output(("lm lfd", mode, "eval-lm"))


@pytest.mark.parametrize("fused", [False, True], ids=["unfused", "fused"])
def test_degenerative_model_not_finite_in_half_precision_is_a_clear_error(
    translation_data, fp16_degenerative, tmp_path, fused
):
    # Weights that are fine in fp32 and overflow in fp16 (|w| > 65504).
    ckpt = checkpoint_utils.load_checkpoint_to_cpu(str(fp16_degenerative))
    big = ("embed_tokens", "output_projection")  # one shared matrix, under three names
    ckpt["model"] = {
        k: v.float() * (1e5 if any(b in k for b in big) else 1) for k, v in ckpt["model"].items()
    }
    bad = tmp_path / "huge.pt"
    torch.save(ckpt, bad)
    flags = [
        *CRITERIA["lfd_poe"][1],
        "--degenerative-checkpoint",
        bad,
        *(["--fused-output"] if fused else []),
    ]
    result = train_fp16(
        _args(
            translation_data / "bin",
            tmp_path / "s",
            "translation_lfd",
            tiny.TINY_TRANSFORMER,
            flags,
            "fp16",
        ),
        check=False,
    )
    assert result.returncode != 0
    assert (
        f"--degenerative-checkpoint {bad}: its outputs are not finite in torch.float16"
        in result.stdout
    )
    assert "Minimum loss scale reached" not in result.stdout
