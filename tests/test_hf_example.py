"""The transformers example of docs/transformers.md runs as written (``--tiny``: a few
updates of tiny models, in this process): TaiLr on a causal LM and on a T5, LFD's two
stages, each saved model loadable."""

import importlib.util
from pathlib import Path

import pytest

pytest.importorskip("transformers")
from transformers import AutoModelForCausalLM  # noqa: E402

from hf_tiny import one_thread  # noqa: E402,F401  (autouse fixture)

pytestmark = pytest.mark.integration

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "transformers" / "finetune.py"


def test_the_example_runs_and_saves_the_lfd_model_alone(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("finetune_example", EXAMPLE)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    assert example.main(["--tiny", "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    for run in ("causal LM, TaiLr", "seq2seq, TaiLr (fused)", "LFD stage 1", "LFD stage 2"):
        assert run in printed
    degenerative = AutoModelForCausalLM.from_pretrained(tmp_path / "degenerative")
    main = AutoModelForCausalLM.from_pretrained(tmp_path / "lfd")
    assert main.num_parameters() == degenerative.num_parameters()  # the main model alone
