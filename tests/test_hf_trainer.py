"""Every objective trains through transformers' ``Trainer`` (``compute_loss_func`` and
the loss as a callback) and through ``DivgenTrainer``, on a tiny GPT-2 and a tiny T5:
the loss is finite and falls; gradient accumulation over 2 micro-batches gives the
update of one batch twice as large; the update count of the warm-ups and of ENT's start
is the Trainer's ``global_step``."""

import math

import pytest
import torch

pytest.importorskip("transformers")
from safetensors.torch import load_file  # noqa: E402
from transformers import Trainer  # noqa: E402

import hf_tiny  # noqa: E402
from fairseq_divgen.hf import (  # noqa: E402
    DivgenTrainer,
    ErrorNormTruncationLoss,
    LossTruncationLoss,
    MixceLoss,
    TailrLoss,
    TruncatedCELoss,
    UnlikelihoodLoss,
)
from hf_tiny import one_thread  # noqa: E402,F401  (autouse fixture)

pytestmark = pytest.mark.integration

OBJECTIVES = {
    "tailr": lambda: TailrLoss(
        density_ratio_threshold=0.1,
        density_min_weight=0.3,
        label_smoothing=0.1,
        density_ratio_warmup_updates=2,
    ),
    "truncated_ce": lambda: TruncatedCELoss(truncation_ratio=0.5, truncation_warmup_updates=2),
    "unlikelihood": lambda: UnlikelihoodLoss(rank_alpha=1.0),
    "loss_truncation": lambda: LossTruncationLoss(
        dropc=0.4, min_count=16, recompute=16, label_smoothing=0.1
    ),
    "mixce": lambda: MixceLoss(mixing_ratio=0.5),
    "error_norm_truncation": lambda: ErrorNormTruncationLoss(
        token_prune_threshold=1.0, start_prune_iteration=2
    ),
}  # lfd_poe: tests/test_hf_lfd.py


def kind_data(kind):
    if kind == "gpt2":
        return hf_tiny.gpt2(), hf_tiny.lm_data()
    model = hf_tiny.t5()
    return model, hf_tiny.seq2seq_data(model=model)  # decoder_input_ids as the collator's


def assert_trained(trainer):
    losses = hf_tiny.logged_losses(trainer)
    assert len(losses) == 5 and all(math.isfinite(v) for v in losses), losses
    assert losses[-1] < losses[0], losses


@pytest.mark.parametrize("kind", ["gpt2", "t5"])
@pytest.mark.parametrize("name", sorted(OBJECTIVES))
def test_every_objective_trains_with_transformers_trainer(tmp_path, name, kind):
    loss = OBJECTIVES[name]()
    model, data = kind_data(kind)
    trainer = Trainer(
        model=model,
        args=hf_tiny.args(tmp_path, max_steps=10),
        train_dataset=data,
        compute_loss_func=loss,
        callbacks=[loss],
    )
    trainer.train()
    assert_trained(trainer)


@pytest.mark.parametrize("name", sorted(OBJECTIVES))
def test_every_objective_trains_with_divgen_trainer_and_logs_its_values(tmp_path, name):
    model = hf_tiny.gpt2()
    args = hf_tiny.args(tmp_path, max_steps=10, save_strategy="steps", save_steps=10)
    trainer = DivgenTrainer(
        model=model, args=args, loss=OBJECTIVES[name](), train_dataset=hf_tiny.lm_data()
    )
    trainer.train()
    assert_trained(trainer)
    last = [h for h in trainer.state.log_history if "loss" in h][-1]
    assert 0.0 < last["nll_loss"] < math.log(hf_tiny.VOCAB) + 1.0
    saved = load_file(str(tmp_path / "checkpoint-10" / "model.safetensors"))
    main = model.state_dict()
    assert set(saved) <= set(main) and all(torch.equal(v, main[k]) for k, v in saved.items())


def params(model):
    return {k: v.detach().clone() for k, v in model.named_parameters()}


def one_update(tmp_path, make_model, data, loss, batch, accumulate, trainer_cls=Trainer, **kw):
    """The parameters after one SGD update over all of ``data`` (8 sequences)."""
    model = make_model()
    settings = dict(
        max_steps=1,
        per_device_train_batch_size=batch,
        gradient_accumulation_steps=accumulate,
        optim="sgd",
        learning_rate=0.5,
        lr_scheduler_type="constant",
        max_grad_norm=0.0,
        logging_steps=1,
    )
    if trainer_cls is Trainer:
        kw.update(compute_loss_func=loss, callbacks=[loss])
    else:
        kw.update(loss=loss)
    trainer = trainer_cls(
        model=model, args=hf_tiny.args(tmp_path, **settings), train_dataset=data, **kw
    )
    trainer.train()
    return params(model), hf_tiny.logged_losses(trainer)[0]


GA_OBJECTIVES = ["tailr", "unlikelihood", "loss_truncation", "mixce", "error_norm_truncation"]


@pytest.mark.parametrize("kind", ["gpt2", "t5"])
@pytest.mark.parametrize("name", GA_OBJECTIVES)
def test_two_accumulated_micro_batches_update_as_one_batch_twice_as_large(tmp_path, name, kind):
    # The micro-batches hold different numbers of targets (-100 suffixes), so a mean per
    # micro-batch would differ from the mean over the update. (truncated_ce ranks the tokens
    # of each forward batch, as fairseq does per batch, so its two runs select differently.)
    make = hf_tiny.gpt2 if kind == "gpt2" else hf_tiny.t5
    _, data = kind_data(kind)
    data = data[:8]
    whole, loss_whole = one_update(tmp_path / "a", make, data, OBJECTIVES[name](), 8, 1)
    split, loss_split = one_update(tmp_path / "b", make, data, OBJECTIVES[name](), 4, 2)
    assert loss_split == pytest.approx(loss_whole, rel=1e-5, abs=1e-4)  # older logs: 4 decimals
    start = params(make())
    for key in whole:
        moved = (whole[key] - start[key]).abs().max()
        tolerance = 1e-6 * float(moved) + 1e-9  # of the update's size
        assert torch.allclose(split[key], whole[key], rtol=1e-5, atol=tolerance), key
    assert any(not torch.equal(whole[k], start[k]) for k in whole)


def logged(trainer, key):
    return [h[key] for h in trainer.state.log_history if key in h and "loss" in h]


def test_update_counts_are_the_trainers_global_step_under_gradient_accumulation(tmp_path):
    data = hf_tiny.lm_data(48)
    settings = dict(
        max_steps=6, per_device_train_batch_size=4, gradient_accumulation_steps=2, logging_steps=1
    )
    runs = {
        "tailr_gamma": TailrLoss(density_ratio_threshold=0.1, density_ratio_warmup_updates=4),
        "kept_ratio": TruncatedCELoss(truncation_ratio=0.5, truncation_warmup_updates=3),
        "ent_active": ErrorNormTruncationLoss(token_prune_threshold=1.4, start_prune_iteration=2),
    }
    seen = {}
    for key, loss in runs.items():
        trainer = DivgenTrainer(
            model=hf_tiny.gpt2(),
            args=hf_tiny.args(tmp_path / key, **settings),
            loss=loss,
            train_dataset=data,
        )
        trainer.train()
        seen[key] = logged(trainer, key)
    # update k (0-based) is logged at step k + 1, both micro-batches at the same count
    assert seen["tailr_gamma"] == pytest.approx([0.0, 0.025, 0.05, 0.075, 0.1, 0.1])
    assert seen["kept_ratio"][:3] == [1.0, 1.0, 1.0]
    assert all(0.45 < r < 0.6 for r in seen["kept_ratio"][3:]), seen["kept_ratio"]
    assert seen["ent_active"] == [0.0, 0.0, 0.0, 1.0, 1.0, 1.0]
