"""LFD's two stages through ``DivgenTrainer``: stage 1 (``TruncatedCELoss``) saves a model,
stage 2 (``LfdPoeLoss``) loads it once as the frozen degenerative model. Its loss equals the
product of experts written out from both models' logits; the degenerative model stays
frozen, in eval mode, on the trainer's device and the main model's dtype, outside the
checkpoints; a mismatched degenerative model is an error before training."""

import json
import math

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("transformers")
from safetensors.torch import load_file  # noqa: E402

import hf_tiny  # noqa: E402
from fairseq_divgen.hf import DivgenTrainer, LfdPoeLoss, TruncatedCELoss  # noqa: E402
from hf_tiny import one_thread  # noqa: E402,F401  (autouse fixture)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def stage1(tmp_path_factory):
    """A degenerative GPT-2 trained 6 updates with truncated_ce and saved."""
    out = tmp_path_factory.mktemp("stage1")
    trainer = DivgenTrainer(
        model=hf_tiny.gpt2(seed=1),
        args=hf_tiny.args(out / "run", max_steps=6),
        loss=TruncatedCELoss(truncation_ratio=0.5),
        train_dataset=hf_tiny.lm_data(),
    )
    trainer.train()
    trainer.save_model(str(out / "degenerative"))
    return out / "degenerative"


def test_stage_2_trains_and_its_checkpoints_hold_only_the_main_model(tmp_path, stage1):
    model = hf_tiny.gpt2()
    args = hf_tiny.args(tmp_path, max_steps=10, save_strategy="steps", save_steps=5)
    trainer = DivgenTrainer(
        model=model,
        args=args,
        loss=LfdPoeLoss(),
        degenerative_model=str(stage1),
        train_dataset=hf_tiny.lm_data(),
    )
    degenerative = trainer.degenerative.model
    before = {k: v.clone() for k, v in degenerative.state_dict().items()}
    trainer.train()
    losses = hf_tiny.logged_losses(trainer)
    assert all(math.isfinite(v) for v in losses) and losses[-1] < losses[0], losses
    # frozen: unchanged, no gradients, eval mode, no submodule of the main model
    after = degenerative.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not degenerative.training
    assert all(not p.requires_grad and p.grad is None for p in degenerative.parameters())
    assert all(m is not degenerative for m in model.modules())
    assert torch.equal(
        after["lm_head.weight"],
        load_file(str(stage1 / "model.safetensors"))["transformer.wte.weight"],
    )
    main = model.state_dict()
    for step in (5, 10):
        saved = load_file(str(tmp_path / f"checkpoint-{step}" / "model.safetensors"))
        assert set(saved) <= set(main) and len(saved) >= len(main) - 1  # lm_head tied to wte
        assert sum(t.numel() for t in saved.values()) < sum(p.numel() for p in main.values())
        optimizer = torch.load(tmp_path / f"checkpoint-{step}" / "optimizer.pt", weights_only=False)
        trainable = sum(1 for p in model.parameters() if p.requires_grad)
        assert len(optimizer["state"]) == trainable
    for key, value in load_file(str(tmp_path / "checkpoint-10" / "model.safetensors")).items():
        assert torch.equal(value, main[key]), key
    log = json.loads((tmp_path / "checkpoint-10" / "trainer_state.json").read_text())
    assert any("poe_loss" in h for h in log["log_history"])


def reference(main_logits, degen_logits, labels, beta, lam, eos):
    """LFD with EOS outside the product, written out (causal: position t predicts t + 1)."""
    z, zd, y = main_logits[:, :-1], degen_logits[:, :-1], labels[:, 1:]
    vocab = z.size(-1)
    lq = F.log_softmax(z, -1)
    is_eos = torch.arange(vocab) == eos
    rest = F.log_softmax((z + beta * zd).masked_fill(is_eos, -math.inf), -1)
    logp = torch.where(is_eos, lq, rest + torch.log1p(-lq[..., eos : eos + 1].exp()))
    real = y.ne(-100)
    ys = y.clamp(min=0)[..., None]
    per = -logp.gather(-1, ys)[..., 0] - lam * lq.gather(-1, ys)[..., 0]
    return (per * real).sum()


@pytest.mark.parametrize("fused", [False, True])
def test_stage_2_loss_is_the_product_of_experts_with_the_frozen_model(tmp_path, stage1, fused):
    model = hf_tiny.gpt2()
    loss = LfdPoeLoss(degenerative_scale=0.8, mle_weight=2.0)
    trainer = DivgenTrainer(
        model=model,
        args=hf_tiny.args(tmp_path),
        loss=loss,
        degenerative_model=str(stage1),
        fused_output=fused,
    )
    assert loss.eos_token_id == hf_tiny.EOS  # from model.config
    batch = hf_tiny.collate(hf_tiny.lm_data(6))
    model.train()
    got = trainer.compute_loss(model, dict(batch), num_items_in_batch=40)
    got.backward()
    grads = {k: p.grad.clone() for k, p in model.named_parameters()}
    model.zero_grad()
    with torch.no_grad():
        degen = trainer.degenerative.model(input_ids=batch["input_ids"]).logits
    expected = (
        reference(
            model(input_ids=batch["input_ids"]).logits,
            degen,
            batch["labels"],
            0.8,
            2.0,
            hf_tiny.EOS,
        )
        / 40
    )
    expected.backward()
    assert got.item() == pytest.approx(expected.item(), rel=1e-5)
    for key, grad in grads.items():
        torch.testing.assert_close(grad, model.get_parameter(key).grad, rtol=1e-4, atol=1e-6)


def test_the_degenerative_model_takes_the_main_models_dtype(tmp_path, stage1):
    trainer = DivgenTrainer(
        model=hf_tiny.gpt2(dtype=torch.float64),
        args=hf_tiny.args(tmp_path),
        loss=LfdPoeLoss(),
        degenerative_model=str(stage1),
    )
    frozen = trainer.degenerative.model
    assert {p.dtype for p in frozen.parameters()} == {torch.float64}
    assert {p.device for p in frozen.parameters()} == {trainer.args.device}


@pytest.mark.parametrize(
    "make,match",
    [
        (
            lambda: hf_tiny.gpt2(vocab=hf_tiny.VOCAB + 8),
            "vocabulary of 64 symbols and the main model 72",
        ),
        (hf_tiny.t5, "is a causal LM but the main model is an encoder-decoder"),
    ],
)
def test_a_mismatched_degenerative_model_is_an_error_before_training(tmp_path, make, match):
    with pytest.raises(ValueError, match=match):
        DivgenTrainer(
            model=make(),
            args=hf_tiny.args(tmp_path),
            loss=LfdPoeLoss(),
            degenerative_model=hf_tiny.gpt2(seed=2),
        )


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({}, "degenerative_model=DIR"),
        ({"degenerative_model": "/nonexistent/stage1"}, "is not a directory"),
    ],
)
def test_stage_2_without_a_degenerative_model_is_an_error_naming_it(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        DivgenTrainer(
            model=hf_tiny.gpt2(), args=hf_tiny.args(tmp_path), loss=LfdPoeLoss(), **kwargs
        )


def test_without_an_eos_id_stage_2_asks_for_one(tmp_path):
    model = hf_tiny.gpt2()
    model.config.eos_token_id = None
    with pytest.raises(ValueError, match="eos_token_id=ID"):
        DivgenTrainer(
            model=model,
            args=hf_tiny.args(tmp_path),
            loss=LfdPoeLoss(),
            degenerative_model=hf_tiny.gpt2(seed=1),
        )


def test_a_degenerative_model_giving_non_finite_logits_stops_training(tmp_path):
    degenerative = hf_tiny.gpt2(seed=1, tied=False)
    with torch.no_grad():
        degenerative.lm_head.weight[3, 0] = math.inf
    trainer = DivgenTrainer(
        model=hf_tiny.gpt2(),
        args=hf_tiny.args(tmp_path, max_steps=4),
        loss=LfdPoeLoss(),
        degenerative_model=degenerative,
        train_dataset=hf_tiny.lm_data(),
    )
    with pytest.raises(FloatingPointError, match="degenerative model"):
        trainer.train()
    assert trainer.state.global_step == 0  # on the CPU: stopped after the first loss, no update
