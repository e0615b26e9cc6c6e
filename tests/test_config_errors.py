"""Bad criterion flags stop fairseq-train before any data is loaded, naming the flag."""
import pytest

import tiny
from fairseq_divgen.fairseq_commands import run_fairseq

CASES = [
    (["--criterion", "tailr", "--density-ratio-threshold", "1.5"], "--density-ratio-threshold must be in [0.0, 1.0]"),
    (["--criterion", "tailr", "--density-ratio-threshold", "-0.1"], "--density-ratio-threshold must be in [0.0, 1.0]"),
    (["--criterion", "tailr", "--density-min-weight", "2"], "--density-min-weight must be in [0.0, 1.0]"),
    (["--criterion", "tailr", "--density-min-weight", "-1"], "--density-min-weight must be in [0.0, 1.0]"),
    (["--criterion", "tailr", "--density-ratio-warmup-updates", "-5"], "--density-ratio-warmup-updates must be >= 0"),
    (["--criterion", "truncated_ce", "--truncation-ratio", "0"], "--truncation-ratio must be in (0.0, 1.0]"),
    (["--criterion", "truncated_ce", "--truncation-ratio", "1.2"], "--truncation-ratio must be in (0.0, 1.0]"),
    (["--criterion", "truncated_ce", "--truncation-warmup-updates", "-3"], "--truncation-warmup-updates must be >= 0"),
    (["--criterion", "lfd_poe", "--degenerative-scale", "-1"], "--degenerative-scale must be >= 0"),
    (["--criterion", "lfd_poe", "--mle-weight", "-0.5"], "--mle-weight must be >= 0"),
    (["--criterion", "lfd_poe", "--label-smoothing", "1.5"], "--label-smoothing must be in [0.0, 1.0]"),
    (["--criterion", "lfd_poe", "--label-smoothing", "-0.1"], "--label-smoothing must be in [0.0, 1.0]"),
    (["--criterion", "unlikelihood", "--rank-alpha", "-1"], "--rank-alpha must be >= 0, got -1.0"),
    (["--criterion", "mixce", "--mixing-ratio", "1.5"], "--mixing-ratio must be in [0.0, 1.0], got 1.5"),
    (["--criterion", "loss_truncation", "--dropc", "1"], "--dropc must be in [0.0, 1.0), got 1.0"),
    (["--criterion", "loss_truncation", "--min-count", "-1"], "--min-count must be an integer >= 0, got -1"),
    (["--criterion", "loss_truncation", "--recompute", "0"], "--recompute must be an integer >= 1, got 0"),
    (["--criterion", "error_norm_truncation"], "needs --token-prune-threshold"),
    (["--criterion", "error_norm_truncation", "--token-prune-threshold", "1.5"], "--token-prune-threshold must be in (0.0, 1.4142135623730951], got 1.5"),
    (["--criterion", "error_norm_truncation", "--token-prune-threshold", "0"], "--token-prune-threshold must be in (0.0, 1.4142135623730951]"),
    (["--criterion", "error_norm_truncation", "--token-prune-threshold", "1", "--start-prune-iteration", "-1"], "--start-prune-iteration must be >= 0"),
]  # fmt: skip


@pytest.mark.parametrize("flags,message", CASES, ids=[" ".join(c[0][1:]) for c in CASES])
def test_bad_flag_stops_training_before_data_loading(translation_data, tmp_path, flags, message):
    save = tmp_path / "ckpt"
    save.mkdir()
    precious = save / "checkpoint_last.pt"
    precious.write_bytes(b"an earlier run's checkpoint")
    result = run_fairseq(
        "train",
        [translation_data / "bin", "--task", "translation", *tiny.TINY_TRANSFORMER,
         *tiny.common_train_args(save), *flags],
        check=False,
    )  # fmt: skip
    assert result.returncode != 0
    assert message in result.stdout
    assert "loaded" not in result.stdout  # no dataset was read
    assert precious.read_bytes() == b"an earlier run's checkpoint"


def test_help_texts_say_the_defaults_and_the_smoothing_conventions():
    from dataclasses import fields

    from fairseq.criterions import CRITERION_DATACLASS_REGISTRY

    def helps(name):
        return {f.name: f.metadata.get("help", "") for f in fields(CRITERION_DATACLASS_REGISTRY[name])}

    tailr, lfd = helps("tailr"), helps("lfd_poe")
    assert "most aggressive" in tailr["density_ratio_threshold"] and "0.1" in tailr["density_ratio_threshold"]
    assert "0.3" in tailr["density_min_weight"]
    assert "eps / V" in tailr["label_smoothing"] and "eps / (V - 1)" in tailr["label_smoothing"]
    assert "eps / (V - 1)" in lfd["label_smoothing"]
