"""Shared fixtures: tiny corpora binarized once per test session by fairseq-preprocess."""
import pytest

import tiny


@pytest.fixture(scope="session")
def translation_data(tmp_path_factory):
    """Binarized toy translation data (src -> tgt) and its raw text folder."""
    root = tmp_path_factory.mktemp("translation")
    tiny.write_translation_corpus(root / "raw")
    tiny.binarize_translation(root / "raw", root / "bin")
    return root


@pytest.fixture(scope="session")
def translation_degenerative(translation_data, tmp_path_factory):
    """A stage-1 LFD model (truncated_ce, 6 updates) of the toy translation data, trained
    once per session: a degenerative checkpoint for the tests whose subject is stage 2."""
    save = tmp_path_factory.mktemp("degenerative")
    tiny.train_degenerative(translation_data / "bin", save)
    return save / "checkpoint_last.pt"


@pytest.fixture(scope="session")
def lm_data(tmp_path_factory):
    """Binarized toy language-modeling data and its raw text folder."""
    root = tmp_path_factory.mktemp("lm")
    tiny.write_lm_corpus(root / "raw")
    tiny.binarize_lm(root / "raw", root / "bin")
    return root


def pytest_configure(config):
    # fairseq and torch deprecation noise that says nothing about this project.
    for pattern in (
        "ignore::DeprecationWarning:torch.*",
        "ignore::DeprecationWarning:fairseq.*",
        "ignore::FutureWarning:fairseq.*",
        "ignore::UserWarning:fairseq.*",
    ):
        config.addinivalue_line("filterwarnings", pattern)
