"""The fused output path in transformers (``DivgenTrainer(fused_output=True)``): training
runs as on the full logits (same logged losses, same parameters) while the lm_head never
makes the (tokens, vocabulary) logits; a model whose logits are changed after its head
(BART) trains on its full logits with one warning; under torch's DDP with
``find_unused_parameters`` the fused loss gives the gradients of one process alone."""

import logging
import socket

import pytest
import torch

pytest.importorskip("transformers")

import hf_tiny  # noqa: E402
from fairseq_divgen.hf import (  # noqa: E402
    DivgenTrainer,
    ErrorNormTruncationLoss,
    LfdPoeLoss,
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
        density_ratio_threshold=0.1, density_min_weight=0.3, label_smoothing=0.1
    ),
    "truncated_ce": lambda: TruncatedCELoss(truncation_ratio=0.5),
    "lfd_poe": lambda: LfdPoeLoss(label_smoothing=0.1),
    "unlikelihood": lambda: UnlikelihoodLoss(),
    "loss_truncation": lambda: LossTruncationLoss(min_count=8, recompute=8),
    "mixce": lambda: MixceLoss(),
    "error_norm_truncation": lambda: ErrorNormTruncationLoss(token_prune_threshold=1.0),
}


def make(kind):
    if kind == "gpt2-untied":
        return hf_tiny.gpt2(tied=False), hf_tiny.lm_data(32), hf_tiny.gpt2(seed=1, tied=False)
    if kind == "llama":
        return hf_tiny.llama(), hf_tiny.lm_data(32), hf_tiny.llama(seed=1)
    if kind == "t5":
        return hf_tiny.t5(), hf_tiny.seq2seq_data(32), hf_tiny.t5(seed=1)
    return hf_tiny.bart(), hf_tiny.seq2seq_data(32), hf_tiny.bart(seed=1)


def train(tmp_path, kind, name, fused):
    """Logged losses and parameters after 4 SGD updates, and the lm_head's output shapes."""
    model, data, degenerative = make(kind)
    shapes = []
    model.get_output_embeddings().register_forward_hook(
        lambda m, i, o: shapes.append(tuple(o.shape))
    )
    extra = {"degenerative_model": degenerative} if name == "lfd_poe" else {}
    trainer = DivgenTrainer(
        model=model,
        loss=OBJECTIVES[name](),
        fused_output=fused,
        args=hf_tiny.args(tmp_path, max_steps=4, logging_steps=1, optim="sgd", learning_rate=0.5),
        train_dataset=data,
        **extra,
    )
    trainer.train()
    params = {k: v.detach().clone() for k, v in model.named_parameters()}
    return hf_tiny.logged_losses(trainer), params, shapes


CASES = [("gpt2-untied", name) for name in sorted(OBJECTIVES)] + [
    ("t5", "tailr"),
    ("t5", "unlikelihood"),
    ("t5", "lfd_poe"),
    ("llama", "tailr"),
]


@pytest.mark.parametrize("kind,name", CASES)
def test_fused_training_equals_training_on_the_logits_without_making_them(tmp_path, kind, name):
    losses, params, _ = train(tmp_path / "full", kind, name, fused=False)
    fused_losses, fused_params, shapes = train(tmp_path / "fused", kind, name, fused=True)
    assert fused_losses == pytest.approx(losses, rel=1e-5)
    for key in params:
        torch.testing.assert_close(fused_params[key], params[key], rtol=1e-5, atol=1e-6)
    # one full forward of one sequence (the check that the model is covered); in training,
    # the head's output is empty: the logits are made a chunk at a time inside the loss
    assert shapes[0][0] == 1 and shapes[0][-1] == hf_tiny.VOCAB
    assert shapes[1:] and all(s[-1] == 0 for s in shapes[1:]), shapes


def test_a_model_changing_its_logits_after_the_head_trains_on_them_with_one_warning(
    tmp_path, caplog
):
    losses, params, _ = train(tmp_path / "full", "bart", "tailr", fused=False)
    with caplog.at_level(logging.WARNING, logger="fairseq_divgen.hf.fused"):
        fused_losses, fused_params, shapes = train(tmp_path / "fused", "bart", "tailr", fused=True)
    warnings = [r.getMessage() for r in caplog.records if "fused_output" in r.getMessage()]
    assert len(warnings) == 1 and "BartForConditionalGeneration" in warnings[0]
    assert "final_logits_bias" in warnings[0]
    assert fused_losses == losses
    assert all(s[-1] == hf_tiny.VOCAB for s in shapes)


def reset_accelerate_state():
    """Forget accelerate's process-wide state (mixed precision, distributed setup), which
    the Trainers of transformers 4.x otherwise carry into the next tests of this process."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_fused_loss_under_ddp_with_find_unused_parameters(tmp_path):
    # an untied head is used by no forward computation but the loss: DDP must still see it
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    batch = hf_tiny.collate(hf_tiny.lm_data(8))
    grads = {}
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{_free_port()}", rank=0, world_size=1
    )
    try:
        for wrap in (False, True):
            model = hf_tiny.gpt2(tied=False)
            trainer = DivgenTrainer(
                model=model,
                args=hf_tiny.args(tmp_path),
                fused_output=True,
                loss=TailrLoss(density_ratio_threshold=0.1),
            )
            run = DistributedDataParallel(model, find_unused_parameters=True) if wrap else model
            run.train()
            for _ in range(2):  # a second step fails if DDP saw the head's gradient as unexpected
                model.zero_grad()
                trainer.compute_loss(run, dict(batch), num_items_in_batch=None).backward()
            grads[wrap] = {k: p.grad.clone() for k, p in model.named_parameters()}
    finally:
        dist.destroy_process_group()
        reset_accelerate_state()
    assert grads[True]["lm_head.weight"].abs().sum() > 0
    for key in grads[False]:
        torch.testing.assert_close(grads[True][key], grads[False][key])


def test_fused_under_bf16_mixed_precision_projects_in_bf16(tmp_path, monkeypatch):
    from fairseq_divgen.losses import chunked

    dtypes = []
    original = chunked.OutputLayer.__init__

    def spy(self, h, weight, bias, dtype=None):
        original(self, h, weight, bias, dtype)
        dtypes.append(self.dtype)

    losses = {}
    # transformers 4.x's TrainingArguments(bf16=True) sets this for the whole process
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "no")
    try:
        for fused in (False, True):
            monkeypatch.setattr(chunked.OutputLayer, "__init__", spy)
            model, data, _ = make("gpt2-untied")
            trainer = DivgenTrainer(
                model=model,
                loss=TailrLoss(density_ratio_threshold=0.1),
                fused_output=fused,
                train_dataset=data,
                args=hf_tiny.args(tmp_path / str(fused), max_steps=3, logging_steps=1, bf16=True),
            )
            trainer.train()
            losses[fused] = hf_tiny.logged_losses(trainer)
    finally:
        reset_accelerate_state()
    assert dtypes and set(dtypes) == {torch.bfloat16}  # the fused projections, as the head's
    assert losses[True] == pytest.approx(losses[False], rel=2e-2)
