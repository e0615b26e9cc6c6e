"""LFD end to end with real fairseq: truncated_ce (stage 1) -> lfd_poe (stage 2) ->
plain-task generation / evaluation, resume, validate, and the checks on bad input."""

import hashlib
import logging
import random
import re
import shutil

import fairseq  # noqa: F401  (fairseq_divgen registers, and allowlists checkpoints, once fairseq is imported)
import pytest
import torch

import tiny
import workers
from fairseq_divgen.fairseq_commands import USER_DIR, run_fairseq

# The degenerative model is smaller than the main model (TINY_TRANSFORMER, dim 32).
SMALL_TRANSFORMER = [
    "--arch",
    "transformer",
    "--share-all-embeddings",
    "--encoder-layers",
    "1",
    "--decoder-layers",
    "1",
    "--encoder-embed-dim",
    "16",
    "--decoder-embed-dim",
    "16",
    "--encoder-ffn-embed-dim",
    "32",
    "--decoder-ffn-embed-dim",
    "32",
    "--encoder-attention-heads",
    "2",
    "--decoder-attention-heads",
    "2",
]
STAGE1 = ["--criterion", "truncated_ce", "--truncation-ratio", "0.5"]
STAGE2 = ["--criterion", "lfd_poe", "--degenerative-scale", "1.0", "--mle-weight", "0.5"]
LOADED = "loaded degenerative model from"


def _train(data, save_dir, task, arch, extra, max_update=10, check=True):
    args = [data, "--task", task, *arch, *tiny.common_train_args(save_dir, max_update), *extra]
    return run_fairseq("train", args, check=check)


def _sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _load(path):
    return torch.load(path, map_location="cpu")  # allowlisted by importing fairseq_divgen


@pytest.fixture(scope="module")
def checkpoints(translation_data, lm_data, tmp_path_factory):
    """Every stage-1 model this module uses, trained in one process
    (scripts/fairseq_worker.py) after the two corpora they need are binarized:

    - ``mt``, ``lm``: stage 1 of the toy translation and language-modeling data;
    - ``otherdict``: translation data with another dictionary (an extra word);
    - ``othersize``: a dictionary with more symbols, its data directory deleted;
    - ``orphans``: stage-1 checkpoints whose data directory is gone: the task's own
      (``same``), one with the same dictionary size in another order (``other``), and the
      reverse direction (``reverse``, tgt -> src);
    - ``adaptive``: a language model with an adaptive softmax (no full-vocabulary logits),
      trained with fairseq's adaptive_loss.
    """
    root = tmp_path_factory.mktemp("stage1")
    tiny.write_translation_corpus(root / "otherdict" / "raw", seed=11)
    for side in ("src", "tgt"):
        path = root / "otherdict" / "raw" / f"train.{side}"
        path.write_text("zz " * 5 + "\n" + path.read_text())
    tiny.binarize_translation(root / "otherdict" / "raw", root / "otherdict" / "bin")
    tiny.write_translation_corpus(root / "othersize" / "raw", seed=12)
    extra = " ".join(f"new{i}" for i in range(9))
    for side in ("src", "tgt"):
        path = root / "othersize" / "raw" / f"train.{side}"
        path.write_text(extra + "\n" + path.read_text())
    tiny.binarize_translation(root / "othersize" / "raw", root / "othersize" / "bin")
    orphans = root / "orphans"
    shutil.copytree(translation_data / "bin", orphans / "bin")
    shutil.copytree(root / "otherdict" / "bin", orphans / "other-bin")

    plan = workers.Plan(root / "runs")

    def train(name, data, save, task, arch, extra, max_update=10):
        args = [data, "--task", task, *arch, *tiny.common_train_args(save, max_update), *extra]
        plan.add(name, args)
        return save / "checkpoint_last.pt"

    small = SMALL_TRANSFORMER
    found = {
        "mt": train("mt", translation_data / "bin", root / "mt", "translation", small, STAGE1),
        "lm": train("lm", lm_data / "bin", root / "lm", "language_modeling", tiny.TINY_LM, STAGE1),
        "otherdict": train(
            "otherdict",
            root / "otherdict" / "bin",
            root / "otherdict" / "ck",
            "translation",
            small,
            STAGE1,
            2,
        ),
        "othersize": train(
            "othersize",
            root / "othersize" / "bin",
            root / "othersize" / "ck",
            "translation",
            small,
            STAGE1,
            2,
        ),
        "orphans": {
            "reverse": train(
                "reverse",
                orphans / "bin",
                orphans / "reverse",
                "translation",
                small,
                [*STAGE1, "--source-lang", "tgt", "--target-lang", "src"],
                2,
            ),
            "other": train(
                "other", orphans / "other-bin", orphans / "other", "translation", small, STAGE1, 2
            ),
            "same": train(
                "same", orphans / "bin", orphans / "same", "translation", small, STAGE1, 2
            ),
        },
        "adaptive": train(
            "adaptive",
            lm_data / "bin",
            root / "adaptive",
            "language_modeling",
            [*tiny.TINY_LM, "--adaptive-softmax-cutoff", "12,20"],
            ["--criterion", "adaptive_loss", "--ddp-backend", "legacy_ddp"],
            2,
        ),
    }
    plan.execute()
    for name in plan.logs:
        plan.output(name)
    shutil.rmtree(root / "othersize" / "bin")  # as if copied from another machine
    shutil.rmtree(orphans / "bin")
    shutil.rmtree(orphans / "other-bin")
    return found


@pytest.fixture(scope="module")
def stage1_translation(checkpoints):
    return checkpoints["mt"]


@pytest.fixture(scope="module")
def stage1_lm(checkpoints):
    return checkpoints["lm"]


@pytest.fixture(scope="module")
def other_dictionary_checkpoint(checkpoints):
    return checkpoints["otherdict"]


@pytest.fixture(scope="module")
def other_size_checkpoint(checkpoints):
    return checkpoints["othersize"]


@pytest.fixture(scope="module")
def orphan_checkpoints(checkpoints):
    return checkpoints["orphans"]


@pytest.fixture(scope="module")
def adaptive_softmax_lm(checkpoints):
    return checkpoints["adaptive"]


def test_translation_two_stages_resume_validate_generate(
    translation_data, stage1_translation, translation_degenerative, tmp_path, caplog
):
    data = translation_data / "bin"
    degen = tmp_path / "degenerative.pt"
    shutil.copy(stage1_translation, degen)
    before_sha = _sha256(degen)
    before = _load(degen)["model"]

    save = tmp_path / "stage2"
    flags = ["--degenerative-checkpoint", degen, *STAGE2]
    out = _train(data, save, "translation_lfd", tiny.TINY_TRANSFORMER, flags).stdout
    assert out.count(LOADED) == 1
    inner = tiny.json_logs(out, "train_inner")
    assert len(inner) == 10 and all("poe_loss" in r and "eos_nll" in r for r in inner)
    valid = tiny.json_logs(out, "valid")[-1]
    assert "valid_poe_loss" in valid and "valid_degen_nll_loss" in valid

    # The degenerative model is untouched, bit for bit.
    assert _sha256(degen) == before_sha
    after = _load(degen)["model"]
    assert all(torch.equal(before[k], after[k]) for k in before)

    # The stage-2 checkpoint holds the main model only: no criterion state, an
    # optimizer over exactly the main model's parameters (the same Adam states as an
    # MLE run of the same architecture), and the size of that MLE checkpoint.
    mle = tmp_path / "mle"
    _train(
        data,
        mle,
        "translation",
        tiny.TINY_TRANSFORMER,
        ["--criterion", "label_smoothed_cross_entropy", "--label-smoothing", "0.1"],
    )
    ckpt = _load(save / "checkpoint_last.pt")
    ckpt_mle = _load(mle / "checkpoint_last.pt")
    assert not ckpt.get("criterion")
    assert ckpt["model"].keys() == ckpt_mle["model"].keys()

    def adam_shapes(c):
        return [tuple(v["exp_avg"].shape) for v in c["last_optimizer_state"]["state"].values()]

    assert adam_shapes(ckpt) == adam_shapes(ckpt_mle)
    size_lfd = (save / "checkpoint_last.pt").stat().st_size
    size_mle = (mle / "checkpoint_last.pt").stat().st_size
    print(f"checkpoint bytes: lfd_poe {size_lfd}, label_smoothed_cross_entropy {size_mle}")
    assert abs(size_lfd - size_mle) / size_mle < 0.05, (size_lfd, size_mle)

    # Resume: the update count grows and the degenerative model is loaded again.
    out = _train(data, save, "translation_lfd", tiny.TINY_TRANSFORMER, flags, max_update=14).stdout
    assert out.count(LOADED) == 1
    assert [int(r["num_updates"]) for r in tiny.json_logs(out, "train_inner")] == [11, 12, 13, 14]
    assert "was trained with --degenerative-checkpoint" not in out

    # Resuming with another degenerative model is said, naming both checkpoints (the run
    # keeps the fingerprint of the one it began with).
    caplog.set_level(logging.WARNING, logger="fairseq_divgen.degenerative")
    argv = [
        data,
        "--task",
        "translation_lfd",
        *tiny.TINY_TRANSFORMER,
        *tiny.common_train_args(save, 16),
    ]
    tiny.build_criterion([*argv, *STAGE2, "--degenerative-checkpoint", translation_degenerative])
    warned = [r.getMessage() for r in caplog.records if "was trained with" in r.getMessage()]
    assert len(warned) == 1 and str(degen.resolve()) in warned[0]
    assert str(translation_degenerative.resolve()) in warned[0]
    caplog.clear()
    tiny.build_criterion([*argv, *STAGE2, "--degenerative-checkpoint", degen])  # the same one
    assert not [r for r in caplog.records if "was trained with" in r.getMessage()]

    # fairseq-validate rebuilds task and criterion from the saved config.
    val = run_fairseq(
        "validate",
        [
            data,
            "--task",
            "translation_lfd",
            "--path",
            save / "checkpoint_last.pt",
            "--user-dir",
            USER_DIR,
            "--cpu",
            "--valid-subset",
            "valid",
            "--batch-size",
            "16",
        ],
    ).stdout
    assert "valid on 'valid' subset" in val and "poe_loss" in val

    # Generation needs only the main model and the plain translation task.
    degen.rename(tmp_path / "moved-away.pt")
    gen = run_fairseq(
        "generate",
        [
            data,
            "--task",
            "translation",
            "--path",
            save / "checkpoint_last.pt",
            "--user-dir",
            USER_DIR,
            "--cpu",
            "--beam",
            "4",
            "--batch-size",
            "16",
            "--gen-subset",
            "test",
            "--required-batch-size-multiple",
            "1",
        ],
    ).stdout
    assert len(tiny.hypotheses(gen)) == 30 and LOADED not in gen


def test_language_model_two_stages_then_plain_eval_lm(lm_data, stage1_lm, tmp_path):
    data = lm_data / "bin"
    degen = tmp_path / "degenerative.pt"
    shutil.copy(stage1_lm, degen)
    save = tmp_path / "stage2"
    # lfd_poe at its defaults (beta 1, lambda 3, EOS outside the product): what a user
    # who passes no LFD flags gets must learn the language within 10 updates
    out = _train(
        data,
        save,
        "language_modeling_lfd",
        tiny.TINY_LM,
        ["--degenerative-checkpoint", degen, "--criterion", "lfd_poe"],
    ).stdout
    assert out.count(LOADED) == 1 and len(tiny.json_logs(out, "train_inner")) == 10
    degen.rename(tmp_path / "moved-away.pt")
    ev = run_fairseq(
        "eval-lm",
        [
            data,
            "--path",
            save / "checkpoint_last.pt",
            *tiny.EVAL_LM,
        ],
    ).stdout
    ppl = float(re.search(r"Perplexity: ([0-9.]+)", ev).group(1))
    print("eval-lm perplexity of the stage-2 main model", ppl)
    # Uniform over the 24 words would be 24 (lambda 0.5 gave 26.1 here). The chain gives
    # every word 4 equally likely successors, so no model averages more than 1/4 on them:
    # a perplexity near 1 would mean eval-lm scored the wrong tokens.
    assert 3.0 < ppl < 24.0


ERRORS = {
    "plain-task": ("translation", lambda c: [], "--criterion lfd_poe needs --task translation_lfd"),
    "no-flag": (
        "translation_lfd",
        lambda c: [],
        "--degenerative-checkpoint is required with --criterion lfd_poe",
    ),
    "missing-file": (
        "translation_lfd",
        lambda c: ["--degenerative-checkpoint", c["tmp"] / "nope.pt"],
        "nope.pt: no such file",
    ),
    "directory": (
        "translation_lfd",
        lambda c: ["--degenerative-checkpoint", c["mt"].parent],
        "is a directory (it holds checkpoint_",
    ),
    "other-size-without-data-dir": (
        "translation_lfd",
        lambda c: ["--degenerative-checkpoint", c["othersize"]],
        "decoder.embed_tokens.weight has 64 rows, but the task's target dictionary has 56 symbols",
    ),
    "reverse-direction-without-data-dir": (
        "translation_lfd",
        lambda c: ["--degenerative-checkpoint", c["orphans"]["reverse"]],
        "it translates tgt->src, the task src->tgt",
    ),
    "unreadable": (
        "translation_lfd",
        lambda c: ["--degenerative-checkpoint", c["garbage"]],
        "not a readable fairseq checkpoint (it is not a checkpoint written by fairseq-train, "
        "or it is damaged",
    ),
    "in-save-dir": (
        "translation_lfd",
        lambda c: ["--degenerative-checkpoint", c["mt"], "--save-dir", c["mt"].parent],
        "is in --save-dir",
    ),
    "other-dictionary": (
        "translation_lfd",
        lambda c: ["--degenerative-checkpoint", c["otherdict"]],
        "dictionary differs from the task's at symbol #",
    ),
    "lm-for-translation": (
        "translation_lfd",
        lambda c: ["--degenerative-checkpoint", c["lm"]],
        "holds a decoder-only model, but --task translation_lfd needs an encoder-decoder model",
    ),
    "translation-for-lm": (
        "language_modeling_lfd",
        lambda c: ["--degenerative-checkpoint", c["mt"]],
        "holds an encoder-decoder model, but --task language_modeling_lfd needs a decoder-only",
    ),
    "adaptive-softmax-degenerative": (
        "language_modeling_lfd",
        lambda c: ["--degenerative-checkpoint", c["adaptive"]],
        "the model has an adaptive softmax (--adaptive-softmax-cutoff); the product of experts "
        "needs full-vocabulary logits",
    ),
}


@pytest.fixture
def error_context(
    tmp_path,
    stage1_translation,
    stage1_lm,
    other_dictionary_checkpoint,
    other_size_checkpoint,
    orphan_checkpoints,
    adaptive_softmax_lm,
):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(random.Random(0).randbytes(4096))
    return {
        "tmp": tmp_path,
        "garbage": garbage,
        "otherdict": other_dictionary_checkpoint,
        "lm": stage1_lm,
        "mt": stage1_translation,
        "othersize": other_size_checkpoint,
        "orphans": orphan_checkpoints,
        "adaptive": adaptive_softmax_lm,
    }


def _stage2_argv(data, save, task, flags, max_update=10):
    arch = tiny.TINY_LM if task.startswith("language_modeling") else tiny.TINY_TRANSFORMER
    return [data, "--task", task, *arch, *tiny.common_train_args(save, max_update), *flags, *STAGE2]


@pytest.mark.parametrize("case", list(ERRORS))
def test_bad_degenerative_input_is_refused_when_the_criterion_is_built(
    case, translation_data, lm_data, error_context, tmp_path
):
    # fairseq-train builds the criterion (and the LFD task checks the checkpoint) before it
    # loads any data: built here in-process the same way.
    task, flags, message = ERRORS[case]
    data = (lm_data if task.startswith("language_modeling") else translation_data) / "bin"
    with pytest.raises(ValueError) as err:
        tiny.build_criterion(_stage2_argv(data, tmp_path / "save", task, flags(error_context)))
    assert message in str(err.value)
    assert "weights_only=False" not in str(err.value)  # never advise turning safe loading off


def test_stage2_into_stage1s_save_dir_is_refused_and_stage1_is_untouched(
    translation_data, tmp_path, stage1_translation
):
    # Following fairseq's own hint for the first error ("Criterion does not match; please
    # reset the optimizer") used to train the main model from the degenerative one and
    # replace stage 1's checkpoints: refused before anything is loaded or written.
    stage1 = tmp_path / "stage1"
    shutil.copytree(stage1_translation.parent, stage1)
    before = {p.name: _sha256(p) for p in stage1.iterdir()}
    flags = ["--degenerative-checkpoint", stage1 / "checkpoint_last.pt", "--reset-optimizer"]
    result = run_fairseq(
        "train",
        _stage2_argv(translation_data / "bin", stage1, "translation_lfd", flags),
        check=False,
    )
    assert result.returncode != 0
    assert (
        f"--degenerative-checkpoint {stage1 / 'checkpoint_last.pt'}: is in --save-dir {stage1}"
        in result.stdout
    )
    assert "examples from" not in result.stdout and "Loaded checkpoint" not in result.stdout
    assert {p.name: _sha256(p) for p in stage1.iterdir()} == before
    # the same checkpoint from stage 2's own folder is fine
    tiny.build_criterion(
        _stage2_argv(translation_data / "bin", tmp_path / "lfd", "translation_lfd", flags)
    )


def test_lfd_task_with_another_criterion_never_reads_the_checkpoint(translation_data, tmp_path):
    out = _train(
        translation_data / "bin",
        tmp_path / "save",
        "translation_lfd",
        tiny.TINY_TRANSFORMER,
        [
            "--degenerative-checkpoint",
            tmp_path / "does-not-exist.pt",
            "--criterion",
            "label_smoothed_cross_entropy",
        ],
        max_update=2,
    ).stdout
    assert LOADED not in out and len(tiny.json_logs(out, "train_inner")) == 2


WARNING = "is not here, so its dictionaries cannot be compared symbol by symbol"


@pytest.mark.parametrize("case", ["same", "other"])
def test_missing_stage1_data_dir_is_a_warning_not_a_vacuous_check(
    case, translation_data, orphan_checkpoints, tmp_path
):
    # Same size, same direction: nothing in the checkpoint tells the two apart, so
    # training goes ahead (the sizes and direction were checked) and says what it
    # could not check. Before, the task's dictionary was compared with itself.
    out = _train(
        translation_data / "bin",
        tmp_path / "save",
        "translation_lfd",
        tiny.TINY_TRANSFORMER,
        ["--degenerative-checkpoint", orphan_checkpoints[case], *STAGE2],
        max_update=2,
    ).stdout
    assert WARNING in out and out.count(LOADED) == 1


def test_check_keeps_only_what_loading_needs(translation_data, stage1_translation, tmp_path):
    trainer, task = tiny.build_trainer(
        [
            str(translation_data / "bin"),
            "--task",
            "translation_lfd",
            *tiny.TINY_TRANSFORMER,
            *tiny.common_train_args(tmp_path),
            *STAGE2,
            "--degenerative-checkpoint",
            str(stage1_translation),
        ]
    )
    assert "last_optimizer_state" in _load(stage1_translation)  # the file holds Adam's state
    kept, _own_task = task.degenerative._state  # read by the check at build_criterion
    assert set(kept) == {"args", "cfg", "model"}
    assert not task.degenerative.loaded


def test_degenerative_scale_zero_never_reads_the_checkpoint(translation_data, tmp_path):
    out = _train(
        translation_data / "bin",
        tmp_path / "save",
        "translation_lfd",
        tiny.TINY_TRANSFORMER,
        [
            "--degenerative-checkpoint",
            tmp_path / "does-not-exist.pt",
            "--criterion",
            "lfd_poe",
            "--degenerative-scale",
            "0",
            "--mle-weight",
            "1",
        ],
        max_update=2,
    ).stdout
    inner = tiny.json_logs(out, "train_inner")
    assert LOADED not in out and len(inner) == 2
    assert all("degen_nll_loss" not in r for r in inner)


def test_adaptive_softmax_main_model_is_a_clear_error(lm_data, stage1_lm, tmp_path):
    result = _train(
        lm_data / "bin",
        tmp_path / "save",
        "language_modeling_lfd",
        [*tiny.TINY_LM, "--adaptive-softmax-cutoff", "12,20"],
        ["--degenerative-checkpoint", stage1_lm, *STAGE2],
        max_update=2,
        check=False,
    )
    assert result.returncode != 0
    assert (
        "lfd_poe needs full-vocabulary logits, but the model has an adaptive softmax"
        in result.stdout
    )
