"""Bad criterion flags are refused when fairseq builds the criterion, before any data is
loaded, with a message naming the flag.

The checks run in this process through fairseq's own command-line parsing and
``task.build_criterion`` (what fairseq-train does before it loads data); one
fairseq-train subprocess shows the same end to end: exit code, message, no dataset read,
an earlier checkpoint in the save dir untouched.
"""

import pytest

import tiny
from fairseq_divgen.fairseq_commands import run_fairseq

CASES = [
    (
        ["--criterion", "tailr", "--density-ratio-threshold", "1.5"],
        "--density-ratio-threshold must be in [0.0, 1.0]",
    ),
    (
        ["--criterion", "tailr", "--density-ratio-threshold", "-0.1"],
        "--density-ratio-threshold must be in [0.0, 1.0]",
    ),
    (
        ["--criterion", "tailr", "--density-ratio-threshold", "nan"],
        "--density-ratio-threshold must be in [0.0, 1.0]",
    ),
    (
        ["--criterion", "tailr", "--density-min-weight", "2"],
        "--density-min-weight must be in [0.0, 1.0]",
    ),
    (
        ["--criterion", "tailr", "--density-min-weight", "-1"],
        "--density-min-weight must be in [0.0, 1.0]",
    ),
    (
        ["--criterion", "tailr", "--density-ratio-warmup-updates", "-5"],
        "--density-ratio-warmup-updates must be >= 0",
    ),
    (
        ["--criterion", "tailr", "--label-smoothing", "1.5"],
        "--label-smoothing must be in [0.0, 1.0]",
    ),
    (
        ["--criterion", "truncated_ce", "--truncation-ratio", "0"],
        "--truncation-ratio must be in (0.0, 1.0]",
    ),
    (
        ["--criterion", "truncated_ce", "--truncation-ratio", "1.2"],
        "--truncation-ratio must be in (0.0, 1.0]",
    ),
    (
        ["--criterion", "truncated_ce", "--truncation-warmup-updates", "-3"],
        "--truncation-warmup-updates must be >= 0",
    ),
    (["--criterion", "lfd_poe", "--degenerative-scale", "-1"], "--degenerative-scale must be >= 0"),
    (
        ["--criterion", "lfd_poe", "--degenerative-scale", "inf"],
        "--degenerative-scale must be >= 0 and at most 10000",
    ),
    (["--criterion", "lfd_poe", "--mle-weight", "-0.5"], "--mle-weight must be >= 0"),
    (
        ["--criterion", "lfd_poe", "--mle-weight", "1e30"],
        "--mle-weight must be >= 0 and at most 10000",
    ),
    (
        ["--criterion", "lfd_poe", "--label-smoothing", "1.5"],
        "--label-smoothing must be in [0.0, 1.0]",
    ),
    (
        ["--criterion", "lfd_poe", "--label-smoothing", "-0.1"],
        "--label-smoothing must be in [0.0, 1.0]",
    ),
    (["--criterion", "unlikelihood", "--rank-alpha", "-1"], "--rank-alpha must be >= 0, got -1.0"),
    (
        ["--criterion", "mixce", "--mixing-ratio", "1.5"],
        "--mixing-ratio must be in [0.0, 1.0], got 1.5",
    ),
    (["--criterion", "loss_truncation", "--dropc", "1"], "--dropc must be in [0.0, 1.0), got 1.0"),
    (
        ["--criterion", "loss_truncation", "--min-count", "-1"],
        "--min-count must be an integer >= 0, got -1",
    ),
    (
        ["--criterion", "loss_truncation", "--recompute", "0"],
        "--recompute must be an integer >= 1, got 0",
    ),
    (["--criterion", "error_norm_truncation"], "needs --token-prune-threshold"),
    (
        ["--criterion", "error_norm_truncation", "--token-prune-threshold", "1.5"],
        "--token-prune-threshold must be in (0.0, 1.4142135623730951], got 1.5",
    ),
    (
        ["--criterion", "error_norm_truncation", "--token-prune-threshold", "0"],
        "--token-prune-threshold must be in (0.0, 1.4142135623730951]",
    ),
    (
        [
            "--criterion",
            "error_norm_truncation",
            "--token-prune-threshold",
            "1",
            "--start-prune-iteration",
            "-1",
        ],
        "--start-prune-iteration must be >= 0",
    ),
    (
        ["--criterion", "tailr", "--fused-output", "--ddp-backend", "fully_sharded"],
        "--fused-output cannot run with --ddp-backend fully_sharded",
    ),
    (
        ["--criterion", "mixce", "--fused-output", "--ddp-backend", "fully_sharded"],
        "Use --ddp-backend pytorch_ddp",
    ),
]
GOOD = [
    ["--criterion", "tailr", "--density-ratio-threshold", "0.1", "--fused-output"],
    ["--criterion", "truncated_ce", "--truncation-ratio", "0.5"],
    ["--criterion", "lfd_poe", "--degenerative-scale", "1", "--mle-weight", "3"],
    ["--criterion", "unlikelihood", "--rank-alpha", "0"],
    ["--criterion", "mixce", "--mixing-ratio", "1", "--ddp-backend", "fully_sharded"],
    ["--criterion", "loss_truncation", "--dropc", "0", "--min-count", "0"],
    ["--criterion", "error_norm_truncation", "--token-prune-threshold", "1.4142135623730951"],
]


def _build_criterion(data, flags, degenerative="unused.pt"):
    """fairseq-train's parsing, then the task and its criterion, as fairseq-train builds
    them before any data is loaded."""
    lfd = ["--task", "translation_lfd", "--degenerative-checkpoint", str(degenerative)]
    task_flags = lfd if flags[1] == "lfd_poe" else ["--task", "translation"]
    return tiny.build_criterion(
        [
            data,
            *task_flags,
            *tiny.TINY_TRANSFORMER,
            "--user-dir",
            tiny.USER_DIR,
            "--cpu",
            "--optimizer",
            "adam",
            "--lr",
            "0.005",
            "--max-tokens",
            "400",
            *flags,
        ]
    )


@pytest.mark.parametrize("flags,message", CASES, ids=[" ".join(c[0][1:]) for c in CASES])
def test_bad_flag_is_refused_when_the_criterion_is_built(translation_data, flags, message):
    with pytest.raises(ValueError, match=".") as err:
        _build_criterion(translation_data / "bin", flags)
    assert message in str(err.value)


@pytest.mark.parametrize("flags", GOOD, ids=[" ".join(f[1:]) for f in GOOD])
def test_edge_values_build(translation_data, translation_degenerative, flags):
    # The same path with valid flags (the edges of each range) raises nothing, so the
    # cases above fail for their flag, not for the harness.
    criterion = _build_criterion(translation_data / "bin", flags, translation_degenerative)
    assert type(criterion).__module__.endswith("criterions." + flags[1])


def test_bad_flag_stops_fairseq_train_before_data_loading(translation_data, tmp_path):
    save = tmp_path / "ckpt"
    save.mkdir()
    precious = save / "checkpoint_last.pt"
    precious.write_bytes(b"an earlier run's checkpoint")
    result = run_fairseq(
        "train",
        [
            translation_data / "bin",
            "--task",
            "translation",
            *tiny.TINY_TRANSFORMER,
            *tiny.common_train_args(save),
            "--criterion",
            "tailr",
            "--density-ratio-threshold",
            "1.5",
        ],
        check=False,
    )
    assert result.returncode != 0
    assert "--density-ratio-threshold must be in [0.0, 1.0], got 1.5" in result.stdout
    assert "loaded" not in result.stdout  # no dataset was read
    assert precious.read_bytes() == b"an earlier run's checkpoint"


def test_help_texts_say_the_defaults_and_the_smoothing_conventions():
    from dataclasses import fields

    from fairseq.criterions import CRITERION_DATACLASS_REGISTRY

    def helps(name):
        return {
            f.name: f.metadata.get("help", "") for f in fields(CRITERION_DATACLASS_REGISTRY[name])
        }

    tailr, lfd = helps("tailr"), helps("lfd_poe")
    assert (
        "most aggressive" in tailr["density_ratio_threshold"]
        and "0.1" in tailr["density_ratio_threshold"]
    )
    assert "0.3" in tailr["density_min_weight"]
    assert "eps / V" in tailr["label_smoothing"] and "eps / (V - 1)" in tailr["label_smoothing"]
    assert "eps / (V - 1)" in lfd["label_smoothing"]
