"""Shared fixtures (tiny corpora binarized once per test session by fairseq-preprocess,
a stage-1 LFD model) and the test tiers (markers declared in pytest.ini).

Tiers: a test that uses the binarized data, or whose module declares
``pytestmark = pytest.mark.integration``, is ``integration``; every other test is
``unit``, the fast tier, and fails if it starts a fairseq tool. ``gpu`` tests run on
``DIVGEN_TEST_DEVICE`` (default ``cuda``, skipped without CUDA).
"""

import os
import subprocess

import pytest
import torch

import fairseq_divgen
import tiny

# fairseq in this process (tests that build tasks, criterions and trainers) needs the
# plugin registered; conftest imports the package before fairseq (tiny.py)
fairseq_divgen.register()

FAIRSEQ_DATA = {"translation_data", "lm_data"}  # fixtures that run fairseq-preprocess
TIERS = ("unit", "integration", "gpu")


def _gpu_tests_can_run() -> bool:
    """The gpu tier runs on DIVGEN_TEST_DEVICE (default cuda): skipped without CUDA then."""
    return os.environ.get("DIVGEN_TEST_DEVICE", "cuda") != "cuda" or torch.cuda.is_available()


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.get_closest_marker("integration") is None and FAIRSEQ_DATA & set(item.fixturenames):
            item.add_marker(pytest.mark.integration)
        if item.get_closest_marker("slow") is not None:
            item.add_marker(pytest.mark.integration)
        if not any(item.get_closest_marker(tier) for tier in TIERS):
            item.add_marker(pytest.mark.unit)
        if item.get_closest_marker("gpu") is not None and not _gpu_tests_can_run():
            item.add_marker(
                pytest.mark.skip(reason="needs CUDA (DIVGEN_TEST_DEVICE=cpu runs them on the CPU)")
            )


@pytest.fixture(autouse=True)
def _unit_tests_start_no_fairseq_tool(request, monkeypatch):
    """In the unit tier, starting fairseq-preprocess / -train / -generate ... fails."""
    if request.node.get_closest_marker("unit") is None:
        return
    popen = subprocess.Popen

    class NoFairseq(popen):
        def __init__(self, args, *rest, **kwargs):
            text = " ".join(map(str, args)) if isinstance(args, (list, tuple)) else str(args)
            if "fairseq_cli" in text or "fairseq_worker" in text:
                raise AssertionError(
                    f"a unit test started a fairseq tool ({text[:120]}): "
                    "declare its module pytest.mark.integration"
                )
            super().__init__(args, *rest, **kwargs)

    monkeypatch.setattr(subprocess, "Popen", NoFairseq)


@pytest.fixture(params=["memory as allocated", "NaN-filled new memory"])
def memory_fill(request):
    """Runs a test twice: as usual, and with torch's deterministic mode filling every newly
    allocated (uninitialised) tensor with NaN, so a gradient built from memory that no
    objective wrote fails instead of passing by luck (torch.empty often returns zeros)."""
    if request.param == "memory as allocated":
        yield request.param
        return
    deterministic = torch.are_deterministic_algorithms_enabled()
    fill = torch.utils.deterministic.fill_uninitialized_memory
    torch.use_deterministic_algorithms(True)
    torch.utils.deterministic.fill_uninitialized_memory = True
    try:
        yield request.param
    finally:
        torch.use_deterministic_algorithms(deterministic)
        torch.utils.deterministic.fill_uninitialized_memory = fill


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
