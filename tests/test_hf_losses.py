"""Each objective of the transformers adapter, called as transformers' ``compute_loss_func``
on random float64 logits, equals (loss and gradient) a computation written here from the
formulas: labels shifted for a causal LM (not for an encoder-decoder), -100 ignored, the
sum divided by ``num_items_in_batch``; the arguments' errors name the argument."""

import math
from fractions import Fraction
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("transformers")
from transformers.modeling_outputs import (  # noqa: E402
    CausalLMOutputWithCrossAttentions,
    Seq2SeqLMOutput,
)

from fairseq_divgen.hf import (  # noqa: E402
    ErrorNormTruncationLoss,
    LfdPoeLoss,
    LossTruncationLoss,
    MixceLoss,
    TailrLoss,
    TruncatedCELoss,
    UnlikelihoodLoss,
)

pytestmark = pytest.mark.unit

V = 16  # labels are drawn from 0..11, so some ids are free to stand for -100
EXTRA = 5  # num_items_in_batch is the batch's count plus this: the divisor must be the one passed


def batch(seed=0, b=3, t=7, eos=None):
    """float64 logits (requiring grad) and labels with -100 (padding and a prompt)."""
    g = torch.Generator().manual_seed(seed)
    logits = (2.0 * torch.randn(b, t, V, generator=g, dtype=torch.float64)).requires_grad_()
    labels = torch.randint(0, 12, (b, t), generator=g)
    if eos is not None:
        labels[:, -2] = eos
    labels[0, 5:] = -100
    labels[2, :2] = -100
    return logits, labels


def pairs(logits, labels, causal):
    """(z (n, V), y (n,)) of the predictions and their gold labels, written out."""
    if causal:  # position t predicts label t + 1
        logits, labels = logits[:, :-1], labels[:, 1:]
    return logits.reshape(-1, V), labels.reshape(-1)


def outputs(logits, causal):
    return (CausalLMOutputWithCrossAttentions if causal else Seq2SeqLMOutput)(logits=logits)


def count(labels, causal):
    return int((labels[:, 1:] if causal else labels).ne(-100).sum())


def nll_and_smooth(z, y):
    """Per row: -log q(y) and sum_v -log q(v) (0 where y is -100), and the mask."""
    lp = F.log_softmax(z, -1)
    real = y.ne(-100)
    nll = -lp.gather(-1, y.clamp(min=0)[:, None])[:, 0]
    return nll * real, -lp.sum(-1) * real, real


def label_smoothed(z, y, eps):
    """fairseq's label-smoothed NLL per row: eps_i = eps / (V - 1)."""
    nll, smooth, _ = nll_and_smooth(z, y)
    eps_i = eps / (V - 1)
    return (1.0 - eps - eps_i) * nll + eps_i * smooth


def grad_of(loss, logits):
    (g,) = torch.autograd.grad(loss, logits, retain_graph=True)
    return g


def check(adapter_loss, reference_loss, logits):
    """Same value and same gradient with respect to the logits."""
    assert adapter_loss.item() == pytest.approx(reference_loss.item(), rel=1e-10)
    torch.testing.assert_close(
        grad_of(adapter_loss, logits), grad_of(reference_loss, logits), rtol=1e-9, atol=1e-12
    )


def state(step):
    return SimpleNamespace(global_step=step)


def at_step(loss, step):
    """The loss as a callback of a trainer at update ``step``."""
    loss.on_train_begin(SimpleNamespace(world_size=1), state(step), None)
    loss.on_step_begin(None, state(step), None)
    return loss


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "seq2seq"])
@pytest.mark.parametrize(
    "gamma,min_weight,eps", [(0.1, 0.3, 0.1), (0.8, 0.0, 0.0), (1e-7, 0.2, 0.1)]
)
def test_tailr_is_the_weighted_nll_with_eps_over_v_smoothing(causal, gamma, min_weight, eps):
    logits, labels = batch(1)
    loss = TailrLoss(
        density_ratio_threshold=gamma, density_min_weight=min_weight, label_smoothing=eps
    )
    n = count(labels, causal) + EXTRA
    got = loss(outputs(logits, causal), labels, n)
    z, y = pairs(logits, labels, causal)
    nll, smooth, real = nll_and_smooth(z, y)
    p = torch.exp(-nll).detach()
    w = (p / (gamma + (1.0 - gamma) * p)).clamp(min_weight, 1.0) * real
    check(got, ((1.0 - eps) * w * nll + eps / V * smooth).sum() / n, logits)


def test_tailr_at_gamma_1_without_clamp_is_trl_dft_and_mixce_at_eta_0():
    # TRL's SFTConfig(loss_type="dft"): per token -sg(p) log p, summed over num_items_in_batch
    logits, labels = batch(2)
    n = count(labels, True)

    def dft():
        nll, _, _ = nll_and_smooth(*pairs(logits, labels, True))
        return (torch.exp(-nll).detach() * nll).sum() / n

    out = outputs(logits, True)
    check(
        TailrLoss(density_ratio_threshold=1.0, density_min_weight=0.0)(out, labels, n),
        dft(),
        logits,
    )
    check(MixceLoss(mixing_ratio=0.0)(out, labels, n), dft(), logits)


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "seq2seq"])
def test_mixce_weights_each_token_by_eta_plus_its_probability(causal):
    logits, labels = batch(3)
    eta = 0.3
    n = count(labels, causal) + EXTRA
    got = MixceLoss(mixing_ratio=eta)(outputs(logits, causal), labels, torch.tensor(float(n)))
    z, y = pairs(logits, labels, causal)
    nll, _, _ = nll_and_smooth(z, y)
    w = eta + (1.0 - eta) * torch.exp(-nll).detach()
    check(got, (w * nll).sum() / n, logits)


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "seq2seq"])
def test_unlikelihood_penalises_the_earlier_tokens_of_the_same_target_sequence(causal):
    logits, labels = batch(4, b=3, t=9)
    alpha = 0.7
    n = count(labels, causal) + EXTRA
    got = UnlikelihoodLoss(rank_alpha=alpha)(outputs(logits, causal), labels, n)
    z = logits[:, :-1] if causal else logits
    y = labels[:, 1:] if causal else labels
    q = F.softmax(z, -1)
    lp = F.log_softmax(z, -1)
    total = logits.new_zeros(())
    for b in range(y.size(0)):
        for t in range(y.size(1)):
            gold = int(y[b, t])
            if gold == -100:
                continue
            earlier = {int(c) for c in y[b, :t] if int(c) != -100} - {gold}
            total = total - lp[b, t, gold]
            for c in earlier:  # the authors' clamp: 1 - q >= 1e-5
                total = total - alpha * torch.log(torch.clamp(1.0 - q[b, t, c], min=1e-5))
    check(got, total / n, logits)


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "seq2seq"])
def test_truncated_ce_keeps_the_lowest_nll_tokens_over_ceil_r_num_items(causal):
    logits, labels = batch(5)
    ratio = 0.3
    n = count(labels, causal) + EXTRA
    got = at_step(TruncatedCELoss(truncation_ratio=ratio), 0)(outputs(logits, causal), labels, n)
    z, y = pairs(logits, labels, causal)
    nll, _, real = nll_and_smooth(z, y)
    values = sorted(float(v) for v, r in zip(nll, real) if r)
    k = math.ceil(Fraction(str(ratio)) * len(values))
    kept = nll.detach().le(values[k - 1]) & real
    check(got, (nll * kept).sum() / math.ceil(Fraction(str(ratio)) * n), logits)


def test_truncated_ce_warm_up_is_cross_entropy_over_num_items():
    logits, labels = batch(6)
    n = count(labels, True) + EXTRA
    loss = at_step(TruncatedCELoss(truncation_ratio=0.3, truncation_warmup_updates=2), 1)
    z, y = pairs(logits, labels, True)
    nll, _, _ = nll_and_smooth(z, y)
    check(loss(outputs(logits, True), labels, n), nll.sum() / n, logits)


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "seq2seq"])
def test_error_norm_truncation_drops_tokens_far_from_their_one_hot_after_the_start(causal):
    logits, labels = batch(7)
    threshold, eps = 1.0, 0.1
    n = count(labels, causal) + EXTRA
    z, y = pairs(logits, labels, causal)
    q = F.softmax(z, -1).detach()
    norm = (q - F.one_hot(y.clamp(min=0), V)).norm(dim=-1)
    keep = norm.le(threshold)
    assert 0 < int((keep & y.ne(-100)).sum()) < int(y.ne(-100).sum())  # some tokens dropped
    per = label_smoothed(z, y, eps)

    def make():
        return ErrorNormTruncationLoss(
            token_prune_threshold=threshold, label_smoothing=eps, start_prune_iteration=1
        )

    # update 1 completed: at most start_prune_iteration, plain label-smoothed MLE
    check(at_step(make(), 1)(outputs(logits, causal), labels, n), per.sum() / n, logits)
    check(at_step(make(), 2)(outputs(logits, causal), labels, n), (per * keep).sum() / n, logits)


def test_loss_truncation_drops_sequences_above_the_quantile_of_earlier_updates():
    dropc, eps = 0.5, 0.1
    loss = LossTruncationLoss(dropc=dropc, min_count=6, recompute=6, label_smoothing=eps)
    loss.on_train_begin(SimpleNamespace(world_size=1), state(0), None)
    history = []
    for step in range(3):
        loss.on_step_begin(None, state(step), None)
        logits, labels = batch(10 + step, b=3, t=8)
        n = count(labels, True) + EXTRA
        z, y = pairs(logits, labels, True)
        nll, _, real = nll_and_smooth(z, y)
        seq_nll = (nll.view(3, -1).sum(1) / real.view(3, -1).sum(1)).detach()
        per = label_smoothed(z, y, eps).view(3, -1)
        if len(history) < 6:  # hot start: plain label-smoothed MLE
            reference = per.sum() / n
        else:
            cutoff = np.quantile(np.array(history[-6:]), 1.0 - dropc)
            kept = seq_nll.le(float(cutoff))
            assert 0 < int(kept.sum()) < 3
            reference = (per * kept[:, None]).sum() / n
        got = loss(outputs(logits, True), labels, n)
        check(got, reference, logits)
        # check() ran the loss's backward: the batch was used, its losses enter the history
        history.extend(seq_nll.tolist())
    assert len(history) == 9


def test_loss_truncation_ignores_a_batch_whose_backward_never_ran():
    loss = LossTruncationLoss(dropc=0.5, min_count=3, recompute=3)
    loss.on_train_begin(SimpleNamespace(world_size=1), state(0), None)
    logits, labels = batch(20)
    loss.on_step_begin(None, state(0), None)
    loss(outputs(logits, True), labels, 10)  # no backward
    loss.on_step_begin(None, state(1), None)
    logits, labels = batch(21)
    n = count(labels, True)
    z, y = pairs(logits, labels, True)
    check(loss(outputs(logits, True), labels, n), label_smoothed(z, y, 0.0).sum() / n, logits)


def lfd_reference(z, zd, y, beta, lam, eps, eos, eos_in_product):
    """LFD's loss written out: the product of experts' log-probabilities of every symbol."""
    lq = F.log_softmax(z, -1)
    s = z + beta * zd
    if eos_in_product:
        logp = F.log_softmax(s, -1)
    else:  # p(eos) = q(eos); the other symbols share 1 - q(eos) as a product of experts
        is_eos = torch.arange(V) == eos
        logp = F.log_softmax(s.masked_fill(is_eos, -math.inf), -1) + torch.log1p(
            -lq[:, eos : eos + 1].exp()
        )
        logp = torch.where(is_eos, lq, logp)
    real = y.ne(-100)
    ys = y.clamp(min=0)[:, None]
    poe = -logp.gather(-1, ys)[:, 0]
    smooth = -logp.sum(-1)
    eps_i = eps / (V - 1)
    main = -lq.gather(-1, ys)[:, 0]
    return (((1.0 - eps - eps_i) * poe + eps_i * smooth + lam * main) * real).sum()


@pytest.mark.parametrize("eos_in_product", [False, True])
def test_lfd_poe_is_the_product_of_experts_plus_lambda_nll(eos_in_product):
    eos = 3
    logits, labels = batch(8, eos=eos)
    degen = 2.0 * torch.randn(
        logits.shape, generator=torch.Generator().manual_seed(9), dtype=torch.float64
    )
    beta, lam, eps = 0.7, 3.0, 0.1
    loss = LfdPoeLoss(
        degenerative_scale=beta,
        mle_weight=lam,
        label_smoothing=eps,
        eos_in_product=eos_in_product,
        eos_token_id=eos,
    )
    n = count(labels, True) + EXTRA
    target = loss.targets(labels, causal=True)
    got = loss.loss(logits.reshape(-1, V), target, n, True, degen.reshape(-1, V))
    z, y = pairs(logits, labels, True)
    zd, _ = pairs(degen, labels, True)
    check(got, lfd_reference(z, zd, y, beta, lam, eps, eos, eos_in_product) / n, logits)


def test_ignore_prefix_size_ignores_the_first_targets_of_each_row():
    logits, labels = batch(11)
    n = 20
    got = MixceLoss(mixing_ratio=1.0, ignore_prefix_size=2)(outputs(logits, True), labels, n)
    z, y = pairs(logits.detach(), labels, True)
    y = y.view(3, -1).clone()
    y[:, :2] = -100
    z = logits[:, :-1].reshape(-1, V)
    nll, _, _ = nll_and_smooth(z, y.reshape(-1))
    check(got, nll.sum() / n, logits)


def test_without_num_items_the_loss_is_the_mean_over_this_batch():
    logits, labels = batch(12)
    z, y = pairs(logits, labels, True)
    nll, _, real = nll_and_smooth(z, y)
    check(
        MixceLoss(mixing_ratio=1.0)(outputs(logits, True), labels), nll.sum() / real.sum(), logits
    )


# -- errors: named argument and fix, before any step ------------------------------------
@pytest.mark.parametrize(
    "make,name",
    [
        (lambda: TailrLoss(density_ratio_threshold=1.5), "density_ratio_threshold"),
        (lambda: TailrLoss(density_min_weight=-0.1), "density_min_weight"),
        (lambda: TailrLoss(label_smoothing=2.0), "label_smoothing"),
        (lambda: TruncatedCELoss(truncation_ratio=0.0), "truncation_ratio"),
        (lambda: LfdPoeLoss(mle_weight=-1.0), "mle_weight"),
        (lambda: LfdPoeLoss(degenerative_scale=math.inf), "degenerative_scale"),
        (lambda: UnlikelihoodLoss(rank_alpha=-1.0), "rank_alpha"),
        (lambda: LossTruncationLoss(dropc=1.0), "dropc"),
        (lambda: LossTruncationLoss(recompute=0), "recompute"),
        (lambda: MixceLoss(mixing_ratio=1.5), "mixing_ratio"),
        (lambda: ErrorNormTruncationLoss(), "token_prune_threshold"),
        (lambda: ErrorNormTruncationLoss(token_prune_threshold=1.5), "token_prune_threshold"),
    ],
)
def test_an_argument_out_of_range_is_an_error_naming_it(make, name):
    with pytest.raises(ValueError, match=name):
        make()


def test_a_warm_up_without_the_trainer_state_says_to_pass_the_loss_as_a_callback():
    logits, labels = batch(13)
    with pytest.raises(ValueError, match=r"callbacks=\[loss\]"):
        TailrLoss(density_ratio_warmup_updates=10)(outputs(logits, True), labels, 10)


def test_lfd_as_a_compute_loss_func_says_to_use_divgen_trainer():
    logits, labels = batch(14)
    with pytest.raises(ValueError, match="degenerative_model"):
        LfdPoeLoss(eos_token_id=2)(outputs(logits, True), labels, 10)


def test_outputs_of_unknown_kind_ask_for_causal():
    logits, labels = batch(15)
    with pytest.raises(ValueError, match="causal=True"):
        MixceLoss()({"logits": logits}, labels, 10)


def test_a_batch_using_every_id_as_a_target_is_scored():
    # the -100 labels need no free id of the vocabulary: the objectives mask by position
    logits, _ = batch(16, b=3, t=V + 1)
    labels = torch.arange(V).repeat(4)[: 3 * (V + 1)].view(3, V + 1)
    labels[1, -3:] = -100
    loss = MixceLoss(mixing_ratio=1.0)(outputs(logits, True), labels, 10)
    nll, _, real = nll_and_smooth(*pairs(logits.detach(), labels, True))
    assert real.sum() < real.numel() and loss.item() == pytest.approx(
        nll.sum().item() / 10, rel=1e-12
    )


def test_logged_means_are_the_nll_and_accuracy_per_target_token():
    logits, labels = batch(17)
    loss = MixceLoss(mixing_ratio=0.5, report_accuracy=True)
    loss(outputs(logits, True), labels, 100)  # a training batch (its logits require grad)
    loss(outputs(logits.detach(), True), labels, 100)  # evaluation: not logged
    logged = loss.pop_metrics()
    z, y = pairs(logits.detach(), labels, True)
    nll, _, real = nll_and_smooth(z, y)
    correct = (z.argmax(-1).eq(y) & real).sum()
    assert logged["nll_loss"] == pytest.approx(float(nll.sum() / real.sum()), rel=1e-12)
    assert logged["accuracy"] == pytest.approx(float(correct / real.sum()), rel=1e-12)
    assert loss.pop_metrics() == {}
