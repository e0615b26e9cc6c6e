"""--fused-output inside fairseq's Trainer trains exactly as the unfused path.

For every criterion (and lfd_poe with EOS outside the product), the same model (same
seed) takes the same 4 updates once unfused and once with --fused-output: the
criterion's raw logging outputs of every update (loss, nll_loss, accuracy counts and
its own sums) agree to 1e-5 relative, so do those of a validation forward afterwards
(truncated_ce's ranking-only pass, lfd_poe's degenerative NLL), and the parameters
differ by less than 1e-5. Covered: the translation transformer with a tied output
embedding, transformer_lm untied, and untied with a bias; --ignore-prefix-size 1 on
some cases (truncated_ce then counts its tokens on the device); about 10 rows per
chunk, so that every batch spans many chunks. The models train
with SGD: Adam's first update is about lr * sign(g) per parameter, which turns
rounding-level differences of near-zero gradient entries into lr-sized parameter
differences (measured here: ~1e-4 after 4 updates with Adam, ~1e-7 with SGD).
"""

import logging
import math

import pytest
import torch

import tiny

STEPS, BSZ = 4, 20
COMMON = ["--dropout", "0", "--report-accuracy", "--optimizer", "sgd", "--lr", "0.5"]
LS = ["--label-smoothing", "0.1"]
TRANSLATION = {
    "tailr": [
        "--criterion",
        "tailr",
        *LS,
        "--density-ratio-threshold",
        "0.1",
        "--density-min-weight",
        "0.3",
    ],
    "truncated_ce": [
        "--criterion",
        "truncated_ce",
        "--truncation-ratio",
        "0.5",
        "--truncation-warmup-updates",
        "1",
    ],
    "truncated_ce (prefix)": [
        "--criterion",
        "truncated_ce",
        "--truncation-ratio",
        "0.3",
        "--ignore-prefix-size",
        "1",
    ],
    "lfd_poe": [
        "--criterion",
        "lfd_poe",
        *LS,
        "--degenerative-scale",
        "0.7",
        "--mle-weight",
        "0.5",
    ],
    "lfd_poe (EOS in product, prefix)": [
        "--criterion",
        "lfd_poe",
        *LS,
        "--eos-in-product",
        "--ignore-prefix-size",
        "1",
    ],
    "unlikelihood": [
        "--criterion",
        "unlikelihood",
        "--rank-alpha",
        "1.0",
        "--ignore-prefix-size",
        "1",
    ],
    "loss_truncation": [
        "--criterion",
        "loss_truncation",
        *LS,
        "--dropc",
        "0.4",
        "--min-count",
        "20",
        "--recompute",
        "20",
    ],
    "mixce": ["--criterion", "mixce", "--mixing-ratio", "0.5"],
    "error_norm_truncation": [
        "--criterion",
        "error_norm_truncation",
        *LS,
        "--token-prune-threshold",
        "1.0",
    ],
}
LM = {
    "tailr (untied)": (["--criterion", "tailr", *LS, "--density-ratio-threshold", "0.1"], False),
    "loss_truncation (untied, bias)": (TRANSLATION["loss_truncation"], True),
}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread, as the multi-process tests run: the tiny matrices gain nothing
    from a second one, which on a busy machine mostly waits (3x slower here)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch):
    """About 10 rows per chunk (V is about 30 here): every batch spans many chunks."""
    from fairseq_divgen.losses import chunking

    monkeypatch.setattr(chunking, "CHUNK_ELEMENTS", 300)


def _with_bias(model):
    """Replace the (untied, bias-free) output projection by one with a bias."""
    old = model.decoder.output_projection
    new = torch.nn.Linear(old.in_features, old.out_features, bias=True)
    with torch.no_grad():
        new.weight.copy_(old.weight)
        new.bias.normal_(0.0, 0.5, generator=torch.Generator().manual_seed(0))
    model.decoder.output_projection = new


def _train(argv, edit_model=None):
    """4 updates on fixed batches, then a validation forward: (parameters, raw logging
    outputs of each update, validation logging output, output-layer calls)."""
    trainer, task = tiny.build_trainer(argv, edit_model)
    task.load_dataset("train")
    ds = task.dataset("train")
    criterion, logs = trainer.criterion, []
    forward = criterion.forward

    def spy(model, sample, reduce=True):
        out = forward(model, sample, reduce)
        logs.append({k: float(v) for k, v in out[2].items()})
        return out

    criterion.forward = spy  # records what the criterion returns to the trainer
    calls = []
    if hasattr(trainer.model.decoder, "output_projection"):
        trainer.model.decoder.output_projection.register_forward_hook(lambda *a: calls.append(1))
    for step in range(STEPS):
        trainer.train_step([ds.collater([ds[i] for i in range(step * BSZ, (step + 1) * BSZ)])])
    trainer.model.eval()
    with torch.no_grad():
        _, _, valid = forward(trainer.model, ds.collater([ds[i] for i in range(200, 200 + BSZ)]))
    params = [p.detach().clone() for p in trainer.model.parameters()]
    return params, logs, {k: float(v) for k, v in valid.items()}, len(calls)


def _compare(argv, edit_model=None):
    plain = _train(argv, edit_model)
    fused = _train([*argv, "--fused-output"], edit_model)
    assert fused[3] == 0 and plain[3] > 0  # the fused path never runs the output layer
    logged = 0.0
    for a, b in zip(plain[1] + [plain[2]], fused[1] + [fused[2]]):
        assert a.keys() == b.keys()
        for k in a:
            assert b[k] == pytest.approx(a[k], rel=1e-5, abs=1e-6), k
            logged = max(logged, abs(a[k] - b[k]) / max(abs(a[k]), 1e-6))
    diff = max((p - q).abs().max().item() for p, q in zip(plain[0], fused[0]))
    print(
        f"max parameter difference {diff:.2e}, max relative difference of a logged value "
        f"{logged:.2e}"
    )
    assert diff < 1e-5
    return plain, fused


@pytest.fixture(scope="module")
def degenerative(translation_data, tmp_path_factory):
    """A degenerative checkpoint: 2 truncated_ce updates of the tiny transformer."""
    save = tmp_path_factory.mktemp("fused-degen")
    argv = [
        str(translation_data / "bin"),
        "--task",
        "translation",
        *tiny.TINY_TRANSFORMER,
        *tiny.common_train_args(save),
        "--criterion",
        "truncated_ce",
    ]
    trainer, task = tiny.build_trainer(argv)
    task.load_dataset("train")
    ds = task.dataset("train")
    for step in range(2):
        trainer.train_step([ds.collater([ds[i] for i in range(step * BSZ, (step + 1) * BSZ)])])
    trainer.consolidate_optimizer()
    trainer.save_checkpoint(str(save / "degenerative.pt"), {})
    return save / "degenerative.pt"


@pytest.mark.parametrize("case", list(TRANSLATION))
def test_fused_output_trains_as_the_unfused_path(case, translation_data, degenerative, tmp_path):
    task, flags = "translation", TRANSLATION[case]
    if case.startswith("lfd_poe"):
        task, flags = "translation_lfd", [*flags, "--degenerative-checkpoint", str(degenerative)]
    argv = [
        str(translation_data / "bin"),
        "--task",
        task,
        *tiny.TINY_TRANSFORMER,
        *tiny.common_train_args(tmp_path),
        *COMMON,
        *flags,
    ]
    plain, fused = _compare(argv)
    if case.startswith("lfd_poe"):
        assert "degen_nll_loss" in fused[2]
    if case.startswith("truncated_ce"):  # the ranking pass ran (kept < all after the warm-up)
        assert fused[1][-1]["kept_tokens"] < fused[1][-1]["ntokens"]
    if case == "loss_truncation":  # truncation was active in the last updates
        assert fused[1][-1]["lt_active"] > 0 and fused[1][-1]["lt_kept_sentences"] < BSZ


@pytest.mark.parametrize("case", list(LM))
def test_fused_output_trains_as_the_unfused_path_language_model(case, lm_data, tmp_path):
    flags, bias = LM[case]
    argv = [
        str(lm_data / "bin"),
        "--task",
        "language_modeling",
        *tiny.TINY_LM,
        *tiny.common_train_args(tmp_path),
        *COMMON,
        *flags,
    ]
    _compare(argv, _with_bias if bias else None)


def test_uncovered_model_falls_back_with_one_warning(translation_data, tmp_path, caplog):
    lstm = [
        "--arch",
        "lstm",
        "--encoder-embed-dim",
        "16",
        "--decoder-embed-dim",
        "16",
        "--encoder-hidden-size",
        "16",
        "--decoder-hidden-size",
        "16",
        "--decoder-out-embed-dim",
        "16",
    ]
    argv = [
        str(translation_data / "bin"),
        "--task",
        "translation",
        *lstm,
        *tiny.common_train_args(tmp_path),
        *COMMON,
        *TRANSLATION["tailr"],
    ]
    plain = _train(argv)
    with caplog.at_level(logging.WARNING, logger="fairseq_divgen"):
        fused = _train([*argv, "--fused-output"])
    lines = [r.getMessage() for r in caplog.records if "--fused-output" in r.getMessage()]
    assert lines == [
        "--fused-output: TailrCriterion computes the unfused loss for LSTMModel: "
        "its decoder (LSTMDecoder) has no output_projection (nn.Linear)"
    ]
    assert all(math.isfinite(r["loss"]) for r in fused[1])
    assert fused[1] == plain[1] and fused[2] == plain[2]  # the same (unfused) computation


def test_adaptive_softmax_is_not_covered(lm_data, tmp_path):
    from fairseq_divgen.output_layer import uncovered_reason

    argv = [
        str(lm_data / "bin"),
        "--task",
        "language_modeling",
        *tiny.TINY_LM,
        *tiny.common_train_args(tmp_path),
        "--criterion",
        "adaptive_loss",
        "--adaptive-softmax-cutoff",
        "10",
        "--ddp-backend",
        "legacy_ddp",
    ]
    trainer, _ = tiny.build_trainer(argv)
    assert "adaptive softmax" in uncovered_reason(trainer.model)


def test_every_criterion_has_the_flag_with_one_help_text():
    from dataclasses import fields

    from fairseq.criterions import CRITERION_DATACLASS_REGISTRY

    names = [
        "tailr",
        "truncated_ce",
        "lfd_poe",
        "unlikelihood",
        "loss_truncation",
        "mixce",
        "error_norm_truncation",
    ]
    flags = [
        {f.name: f for f in fields(CRITERION_DATACLASS_REGISTRY[n])}["fused_output"] for n in names
    ]
    assert all(f.default is False for f in flags)
    assert len({f.metadata["help"] for f in flags}) == 1
