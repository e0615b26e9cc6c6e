"""TaiLr's gamma warm-up (--density-ratio-warmup-updates) inside a real fairseq Trainer.

Reference: gamma_u = gamma * min(u, N) / N after u updates (N > 0), gamma when N = 0;
w_t = clamp(p_t / (gamma_u + (1 - gamma_u) p_t), min_weight, 1);
L = (1 - eps) * sum_t w_t nll_t + (eps / V) * sum_t sum_v -log q_t(v).
"""

import pytest
import torch
import torch.nn.functional as F
from fairseq.logging import metrics

import tiny
from fairseq_divgen.losses import scheduled_gamma


def _ramp(gamma, n, u):
    return gamma if n == 0 else gamma * min(u, n) / n


@pytest.mark.parametrize("n", [0, 1, 10, 4000])
def test_scheduled_gamma_is_a_linear_ramp_then_gamma(n):
    for u in [0, 1, 2, 5, 9, 10, 11, 3999, 4000, 10**6]:
        assert scheduled_gamma(0.1, n, u) == pytest.approx(_ramp(0.1, n, u), rel=1e-12, abs=0)
    assert scheduled_gamma(0.1, n, 0) == (0.1 if n == 0 else 0.0)  # exactly 0: MLE


def _trainer(translation_data, tmp_path, flags):
    argv = [
        str(translation_data / "bin"),
        "--task",
        "translation",
        *tiny.TINY_TRANSFORMER,
        *tiny.common_train_args(tmp_path),
        "--dropout",
        "0",
        *flags,
    ]
    trainer, task = tiny.build_trainer(argv)
    task.load_dataset("valid")
    dataset = task.dataset("valid")
    sample = dataset.collater([dataset[i] for i in range(16)])
    return trainer, sample


@pytest.fixture
def fresh_metrics():
    metrics.reset()
    yield
    metrics.reset()


def _criterion_step(trainer, sample, updates, training=True):
    """Set the trainer's update count as fairseq-train does, then one criterion forward
    (a training forward unless ``training`` is False; dropout is 0, so the reference
    below sees the same logits)."""
    trainer.set_num_updates(updates)
    model, criterion = trainer.model, trainer.criterion
    model.train(training)
    with torch.no_grad():
        loss, _, log = criterion(model, sample)
        logits = model(**sample["net_input"])[0].double()
    lprobs = torch.log_softmax(logits, -1).view(-1, logits.size(-1))
    return loss, log, lprobs, sample["target"].view(-1), criterion.padding_idx


def test_gamma_follows_the_warmup_inside_the_trainer(translation_data, tmp_path, fresh_metrics):
    gamma, n, min_weight, eps = 0.1, 10, 0.05, 0.1
    trainer, sample = _trainer(
        translation_data,
        tmp_path,
        [
            "--criterion",
            "tailr",
            "--density-ratio-threshold",
            str(gamma),
            "--density-min-weight",
            str(min_weight),
            "--label-smoothing",
            str(eps),
            "--density-ratio-warmup-updates",
            str(n),
        ],
    )
    for updates in [0, 1, 3, 9, 10, 25]:
        loss, log, lprobs, target, pad = _criterion_step(trainer, sample, updates)
        g = _ramp(gamma, n, updates)
        keep = target != pad
        lp = lprobs[keep]
        gold = lp.gather(-1, target[keep][:, None]).squeeze(-1)
        p = gold.exp()
        w = (p / (g + (1 - g) * p)).clamp(min_weight, 1.0)
        ref = (1 - eps) * (w * -gold).sum() + eps / lp.size(-1) * (-lp.sum())
        assert log["tailr_gamma_sum"] / log["tailr_weight_count"] == pytest.approx(g, abs=1e-12)
        assert loss.item() == pytest.approx(ref.item(), rel=1e-5)
        assert log["tailr_weight_sum"].item() == pytest.approx(w.sum().item(), rel=1e-5)


def test_validation_scores_the_full_gamma_during_the_warmup(
    translation_data, tmp_path, fresh_metrics
):
    gamma = 0.1
    trainer, sample = _trainer(
        translation_data,
        tmp_path,
        [
            "--criterion",
            "tailr",
            "--density-ratio-threshold",
            str(gamma),
            "--density-min-weight",
            "0.05",
            "--density-ratio-warmup-updates",
            "10",
        ],
    )
    for updates in [0, 3, 25]:
        _, log, _, _, _ = _criterion_step(trainer, sample, updates, training=False)
        assert log["tailr_gamma_sum"] / log["tailr_weight_count"] == pytest.approx(gamma, abs=1e-12)


def test_update_zero_of_the_warmup_is_exactly_cross_entropy(
    translation_data, tmp_path, fresh_metrics
):
    trainer, sample = _trainer(
        translation_data,
        tmp_path,
        [
            "--criterion",
            "tailr",
            "--density-ratio-threshold",
            "0.1",
            "--density-min-weight",
            "0.3",
            "--density-ratio-warmup-updates",
            "100",
        ],
    )
    loss, log, _, target, pad = _criterion_step(trainer, sample, 0)
    model = trainer.model
    with torch.no_grad():
        logits = model(**sample["net_input"])[0]
        lprobs = F.log_softmax(logits.view(-1, logits.size(-1)), dim=-1, dtype=torch.float32)
        ce = F.nll_loss(lprobs, target, ignore_index=pad, reduction="sum")
    # Every weight is exactly 1, so the objective is the plain NLL sum bit for bit, and
    # cross-entropy up to the order in which the two kernels add the tokens.
    assert log["tailr_weight_sum"].item() == log["tailr_weight_count"]
    assert loss.item() == log["nll_loss"].item()
    assert loss.item() == pytest.approx(ce.item(), rel=1e-6)
