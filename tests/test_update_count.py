"""The warm-ups follow fairseq-train's own update counter through every resume, reset
and fine-tune combination fairseq offers (real fairseq-train runs).

Reference: during update u (fairseq logs num_updates = u after it) the trainer has
completed u - 1 updates, so tailr's gamma in force is gamma * min(u - 1, N) / N
(--density-ratio-warmup-updates N) and truncated_ce keeps every token while
u - 1 < N (--truncation-warmup-updates N). fairseq's counter is the num_updates it logs.

Of fairseq's four reset flags only two decide what a reader of the count can see:
``--reset-optimizer`` restarts the trainer's count at 0 and ``--reset-meters`` drops the
checkpoint's meters (which hold the old count). The cases cover all four combinations
of those two, and the dataloader and learning-rate-scheduler resets alone and with them.
"""

import shutil

import pytest

import tiny
import workers
from fairseq_divgen.fairseq_commands import run_fairseq

GAMMA, N = 0.1, 6
TAILR = [
    "--criterion",
    "tailr",
    "--density-ratio-threshold",
    str(GAMMA),
    "--density-min-weight",
    "0.3",
    "--density-ratio-warmup-updates",
    str(N),
]
TRUNC = [
    "--criterion",
    "truncated_ce",
    "--truncation-ratio",
    "0.5",
    "--truncation-warmup-updates",
    str(N),
]
RESETS = {
    "resume": [],
    "reset-optimizer": ["--reset-optimizer"],
    "reset-dataloader": ["--reset-dataloader"],
    "reset-meters": ["--reset-meters"],
    "reset-lr-scheduler": ["--reset-lr-scheduler"],
    "reset-optimizer-and-meters": ["--reset-optimizer", "--reset-meters"],
    # the case that fooled an earlier reader: the optimizer (and its count) restarts
    # while the checkpoint's meters, with the old count, are restored
    "reset-optimizer-and-dataloader": ["--reset-optimizer", "--reset-dataloader"],
    "reset-everything": [
        "--reset-optimizer",
        "--reset-dataloader",
        "--reset-meters",
        "--reset-lr-scheduler",
    ],
}


def _args(data, save, flags, max_update, extra=()):
    return [
        data,
        "--task",
        "translation",
        *tiny.TINY_TRANSFORMER,
        *tiny.common_train_args(save, max_update),
        *flags,
        *extra,
    ]


def _expected_gamma(u):
    return GAMMA * min(u - 1, N) / N


TRUNC_CASES = [
    "resume",
    "reset-optimizer",
    "reset-meters",
    "reset-optimizer-and-meters",
    "reset-optimizer-and-dataloader",
]


@pytest.fixture(scope="module")
def runs(translation_data, tmp_path_factory):
    """A tailr and a truncated_ce run stopped after 4 updates (inside the warm-ups), then,
    each from a copy of those, every resume / reset / fine-tune case (two processes of
    scripts/fairseq_worker.py)."""
    root = tmp_path_factory.mktemp("counts")
    data = translation_data / "bin"
    first = workers.Plan(root / "first")
    first.add("tailr", _args(data, root / "tailr", TAILR, 4))
    first.add("trunc", _args(data, root / "trunc", TRUNC, 4))
    first.execute()
    first.output("tailr"), first.output("trunc")

    def copy(name, to):
        shutil.copytree(root / name, root / to)
        return root / to

    plan = workers.Plan(root / "second")
    for case, flags in RESETS.items():
        plan.add(("tailr", case), _args(data, copy("tailr", f"tailr-{case}"), TAILR, 9, flags))
    for case in TRUNC_CASES:
        plan.add(
            ("trunc", case), _args(data, copy("trunc", f"trunc-{case}"), TRUNC, 9, RESETS[case])
        )
    tailr_ckpt, trunc_ckpt = (
        root / "tailr" / "checkpoint_last.pt",
        root / "trunc" / "checkpoint_last.pt",
    )
    plan.add("finetune", _args(data, root / "ft", TAILR, 3, ["--finetune-from-model", tailr_ckpt]))
    # fairseq ignores --finetune-from-model when the save dir has checkpoint_last.pt
    plan.add(
        "finetune ignored",
        _args(data, copy("tailr", "ft-ignored"), TAILR, 8, ["--finetune-from-model", trunc_ckpt]),
    )
    plan.add("restore", _args(data, root / "restored", TAILR, 8, ["--restore-file", tailr_ckpt]))
    plan.execute()
    return plan


def _inner(runs, name):
    return tiny.json_logs(runs.output(name), "train_inner")


@pytest.mark.parametrize("case", list(RESETS))
def test_gamma_warmup_follows_fairseq_counter_after_resume(case, runs):
    inner = _inner(runs, ("tailr", case))
    counts = [int(r["num_updates"]) for r in inner]
    restarted = "--reset-optimizer" in RESETS[case]
    assert counts[0] == (1 if restarted else 5)  # fairseq's own counter, as it logs it
    for r in inner:
        assert float(r["tailr_gamma"]) == pytest.approx(
            _expected_gamma(int(r["num_updates"])), abs=1e-6
        ), r


@pytest.mark.parametrize("case", TRUNC_CASES)
def test_truncation_warmup_follows_fairseq_counter_after_resume(case, runs):
    inner = _inner(runs, ("trunc", case))
    assert inner
    for r in inner:
        warming = int(r["num_updates"]) - 1 < N
        kept = float(r["kept_ratio"])  # ceil(0.5 n) / n after the warm-up
        assert kept == 1.0 if warming else 0.5 <= kept < 0.52, r


def test_finetune_from_model_restarts_the_warmup(runs):
    inner = _inner(runs, "finetune")
    assert [int(r["num_updates"]) for r in inner] == [1, 2, 3]
    assert [float(r["tailr_gamma"]) for r in inner] == pytest.approx(
        [_expected_gamma(u) for u in (1, 2, 3)], abs=1e-6
    )


def test_finetune_from_model_with_a_checkpoint_in_save_dir_resumes(runs):
    inner = _inner(runs, "finetune ignored")
    assert [int(r["num_updates"]) for r in inner] == [5, 6, 7, 8]
    assert [float(r["tailr_gamma"]) for r in inner] == pytest.approx(
        [_expected_gamma(u) for u in (5, 6, 7, 8)], abs=1e-6
    )


def test_restore_file_continues_the_warmup(runs):
    inner = _inner(runs, "restore")
    assert [int(r["num_updates"]) for r in inner] == [5, 6, 7, 8]
    assert [float(r["tailr_gamma"]) for r in inner] == pytest.approx(
        [_expected_gamma(u) for u in (5, 6, 7, 8)], abs=1e-6
    )


def test_truncated_ce_validation_loss_means_one_thing_across_the_warmup(translation_data, tmp_path):
    data = translation_data / "bin"
    out = run_fairseq(
        "train",
        [
            data,
            "--task",
            "translation",
            *tiny.TINY_TRANSFORMER,
            *tiny.common_train_args(tmp_path / "s", 8),
            *TRUNC,
            "--validate-interval-updates",
            "2",
        ],
    ).stdout
    valid = tiny.json_logs(out, "valid")
    updates = [int(r["valid_num_updates"]) for r in valid]
    assert min(updates) <= N and max(updates) > N  # before and after the warm-up ends
    for r in valid:  # always the truncated loss per kept token
        assert (
            r["valid_loss"] == r["valid_trunc_loss"] and 0.5 <= float(r["valid_kept_ratio"]) < 0.52
        ), r
    # fairseq-validate (no trainer, no update count) reports the same quantity
    val = run_fairseq(
        "validate",
        [
            data,
            "--task",
            "translation",
            "--path",
            tmp_path / "s" / "checkpoint_last.pt",
            "--user-dir",
            tiny.USER_DIR,
            "--cpu",
            "--valid-subset",
            "valid",
            "--batch-size",
            "16",
        ],
    ).stdout
    line = next(text for text in val.splitlines() if "valid on 'valid' subset" in text)
    fields = dict(f.strip().split(" ", 1) for f in line.split("|")[3:] if f.strip())
    assert fields["loss"] == fields["trunc_loss"], line
