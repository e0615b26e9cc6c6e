"""The criterions inside fairseq's Trainer (the task, model and criterion fairseq-train
builds) against independent computations from the same model's logits, with
--sentence-avg, --ignore-prefix-size 1 and --report-accuracy.

References (docs/algorithms.md): per target position t >= 1 (the first is the ignored
prefix) with gold y_t, q = softmax(z), nll_t = -log q(y_t);
tailr: L = (1 - eps) sum_t w_t nll_t + (eps / V) sum_t sum_v -log q_t(v),
w_t = clamp(p_t / (gamma + (1 - gamma) p_t), min_weight, 1);
truncated_ce: the sum of the ceil(R N) smallest nll_t;
lfd_poe: p_poe proportional to q_main q_degen^beta, L = (1 - eps - eps / (V - 1)) sum_t
-log p_poe(y_t) + eps / (V - 1) sum_t sum_v -log p_poe(v) + lambda sum_t nll_t;
sample_size = the number of sentences; accuracy = argmax z_t == y_t over those t.
"""

import math

import pytest
import torch
from fairseq import checkpoint_utils

import tiny

PREFIX = ["--sentence-avg", "--ignore-prefix-size", "1", "--report-accuracy", "--dropout", "0"]


def _setup(translation_data, tmp_path, task, flags):
    argv = [
        str(translation_data / "bin"),
        "--task",
        task,
        *tiny.TINY_TRANSFORMER,
        *tiny.common_train_args(tmp_path),
        *PREFIX,
        *flags,
    ]
    trainer, task_obj = tiny.build_trainer(argv)
    task_obj.load_dataset("valid")
    ds = task_obj.dataset("valid")
    sample = ds.collater([ds[i] for i in range(16)])
    return trainer, task_obj, sample


def _forward(trainer, sample):
    model, criterion = trainer.model, trainer.criterion
    model.eval()
    with torch.no_grad():
        loss, sample_size, log = criterion(model, sample)
        logits = model(**sample["net_input"])[0].double()
    target = sample["target"]
    pad = criterion.padding_idx
    z = logits[:, 1:].reshape(-1, logits.size(-1))
    t = target[:, 1:].reshape(-1)
    keep = t != pad
    return loss, sample_size, log, z[keep], t[keep]


def _accuracy_checks(log, z, t, sample_size, sample):
    assert sample_size == sample["target"].size(0)  # --sentence-avg
    assert int(log["total"]) == len(t)  # positions after the ignored prefix
    assert int(log["n_correct"]) == int((z.argmax(-1) == t).sum())


def test_tailr(translation_data, tmp_path):
    gamma, mw, eps = 0.1, 0.3, 0.1
    trainer, _, sample = _setup(
        translation_data,
        tmp_path,
        "translation",
        [
            "--criterion",
            "tailr",
            "--density-ratio-threshold",
            str(gamma),
            "--density-min-weight",
            str(mw),
            "--label-smoothing",
            str(eps),
        ],
    )
    loss, size, log, z, t = _forward(trainer, sample)
    lp = torch.log_softmax(z, -1)
    gold = lp.gather(-1, t[:, None]).squeeze(-1)
    p = gold.exp()
    w = (p / (gamma + (1 - gamma) * p)).clamp(mw, 1.0)
    ref = (1 - eps) * (w * -gold).sum() + eps / z.size(-1) * -lp.sum()
    assert loss.item() == pytest.approx(ref.item(), rel=1e-5)
    assert log["nll_loss"].item() == pytest.approx(-gold.sum().item(), rel=1e-5)
    assert log["tailr_weight_count"] == len(t)
    _accuracy_checks(log, z, t, size, sample)


def test_truncated_ce(translation_data, tmp_path):
    ratio = 0.3
    trainer, _, sample = _setup(
        translation_data,
        tmp_path,
        "translation",
        ["--criterion", "truncated_ce", "--truncation-ratio", str(ratio)],
    )
    loss, size, log, z, t = _forward(trainer, sample)
    nll = -torch.log_softmax(z, -1).gather(-1, t[:, None]).squeeze(-1)
    k = math.ceil(ratio * len(t) - 1e-9)
    ref = torch.sort(nll).values[:k].sum()
    assert loss.item() == pytest.approx(ref.item(), rel=1e-5)
    assert int(log["kept_tokens"]) == k
    _accuracy_checks(log, z, t, size, sample)


@pytest.fixture(scope="module")
def degenerative(translation_data, tmp_path_factory):
    save = tmp_path_factory.mktemp("degen")
    tiny_args = [
        translation_data / "bin",
        "--task",
        "translation",
        *tiny.TINY_TRANSFORMER,
        *tiny.common_train_args(save, 6),
        "--criterion",
        "truncated_ce",
    ]
    from fairseq_divgen.fairseq_commands import run_fairseq

    run_fairseq("train", tiny_args)
    return save / "checkpoint_last.pt"


@pytest.mark.parametrize("eos_in_product", [False, True])
def test_lfd_poe(translation_data, degenerative, tmp_path, eos_in_product):
    """By default EOS is the main model's own and the rest a product; --eos-in-product
    puts EOS into the product too (the paper's objective)."""
    beta, lam, eps = 0.7, 0.5, 0.1
    trainer, task, sample = _setup(
        translation_data,
        tmp_path,
        "translation_lfd",
        [
            "--criterion",
            "lfd_poe",
            "--degenerative-scale",
            str(beta),
            "--mle-weight",
            str(lam),
            "--label-smoothing",
            str(eps),
            "--degenerative-checkpoint",
            str(degenerative),
            *(["--eos-in-product"] if eos_in_product else []),
        ],
    )
    loss, size, log, z, t = _forward(trainer, sample)
    # the degenerative model, loaded independently of the plugin's loader
    (degen,), _ = checkpoint_utils.load_model_ensemble([str(degenerative)], task=task)
    degen.eval()
    with torch.no_grad():
        zd = degen(**sample["net_input"])[0].double()[:, 1:].reshape(-1, z.size(-1))
    zd = zd[(sample["target"][:, 1:].reshape(-1) != trainer.criterion.padding_idx)]
    q = torch.softmax(z, -1)
    unnorm = q * torch.softmax(zd, -1) ** beta
    eos = task.target_dictionary.eos()
    if not eos_in_product:
        unnorm[:, eos] = 0.0
        p = (1 - q[:, eos : eos + 1]) * unnorm / unnorm.sum(-1, keepdim=True)
        p[:, eos] = q[:, eos]
    else:
        p = unnorm / unnorm.sum(-1, keepdim=True)
    lp = torch.log(p)
    eps_i = eps / (z.size(-1) - 1)
    nll_main = -torch.log(q.gather(-1, t[:, None])).squeeze(-1)
    ref = (
        (1 - eps - eps_i) * -lp.gather(-1, t[:, None]).sum()
        + eps_i * -lp.sum()
        + lam * nll_main.sum()
    )
    assert loss.item() == pytest.approx(ref.item(), rel=1e-5)
    assert log["nll_loss"].item() == pytest.approx(nll_main.sum().item(), rel=1e-5)
    assert log["poe_loss"].item() == pytest.approx(
        -lp.gather(-1, t[:, None]).sum().item(), rel=1e-5
    )
    at_eos = t == eos
    assert int(log["eos_count"]) == int(at_eos.sum()) > 0
    assert log["eos_nll_sum"].item() == pytest.approx(nll_main[at_eos].sum().item(), rel=1e-5)
    gold_d = torch.log_softmax(zd, -1).gather(-1, t[:, None])
    assert log["degen_nll_loss"].item() == pytest.approx(
        -gold_d.sum().item(), rel=1e-5
    )  # validation
    # the degenerative model's (N, V) logits never exist: its features are projected a
    # chunk of rows at a time inside the loss, not by its output layer
    calls = []
    task.degenerative.model.decoder.output_projection.register_forward_hook(
        lambda *a: calls.append(1)
    )
    trainer.model.train()
    trainer.criterion(trainer.model, sample)[0].backward()
    assert calls == []
    _accuracy_checks(log, z, t, size, sample)
