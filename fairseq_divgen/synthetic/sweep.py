"""``divgen-demo --sweep``: TaiLr and LFD settings around the defaults, and the baselines
(unlikelihood, loss truncation, MixCE, error norm truncation), on the same oracle and data."""

import json
from dataclasses import replace
from typing import Dict

from .experiment import Experiment, Variant
from .report import LABELS, markdown

# (gamma, min weight) around the default (0.1, 0.3), the authors' IWSLT14 setting;
# (1e-7, 0.2) is their synthetic / WritingPrompts setting
TAILR_GRID = [(1e-7, 0.2), (1e-3, 0.1), (0.01, 0.1), (0.03, 0.1), (0.1, 0.1)]
# (beta, lambda, EOS in the product) of lfd_poe around the default (1, 3, no), with the
# main run's degenerative model; (1, 1, yes) is the paper's objective and setting
LFD_GRID = [(1.0, 3.0, True), (1.0, 1.0, True), (1.0, 1.0, False), (0.5, 1.0, False)]
# truncation ratios of extra degenerative models (each with an LFD model on top)
TRUNCATION_RATIOS: list = []
# The baselines, each at its paper's / authors' default and one other setting:
# unlikelihood --rank-alpha (paper: 1.0)
UNLIKELIHOOD_GRID = [0.5, 1.0]
# loss truncation --dropc (LossDropper: 0.4); hot start and window min(10000, one epoch)
LOSS_TRUNCATION_GRID = [0.1, 0.4]
# MixCE --mixing-ratio eta (the authors' best on WikiText with GPT-2: 0.1; run.py: 0.5)
MIXCE_GRID = [0.1, 0.5]
# ENT --token-prune-threshold (no published default), starting after the LR warm-up
ENT_GRID = [1.1, 1.3]


def sweep_variants(exp: Experiment) -> Dict[str, Variant]:
    """Extra models of the sweep (the main run's models are reused, not retrained)."""
    m = exp.methods
    out: Dict[str, Variant] = {}
    for gamma, mw in TAILR_GRID:
        out[f"tailr-g{gamma:g}-mw{mw:g}"] = Variant(
            "tailr", replace(m, tailr_gamma=gamma, tailr_min_weight=mw)
        )
    for ratio in TRUNCATION_RATIOS:
        degen = f"degenerative-R{ratio:g}"
        out[degen] = Variant("degenerative", replace(m, truncation_ratio=ratio))
        out[f"lfd-R{ratio:g}"] = Variant("lfd", m, degenerative=degen)
    for beta, lam, eos_in_product in LFD_GRID:
        name = f"lfd-b{beta:g}-l{lam:g}" + ("-eos" if eos_in_product else "")
        extra = {**m.extra, "lfd": ["--eos-in-product"]} if eos_in_product else m.extra
        out[name] = Variant("lfd", replace(m, degenerative_scale=beta, mle_weight=lam, extra=extra))
    for alpha in UNLIKELIHOOD_GRID:
        out[f"unlikelihood-a{alpha:g}"] = Variant(
            "unlikelihood", replace(m, unlikelihood_alpha=alpha)
        )
    window = min(m.loss_truncation_min_count, exp.size.n_train)
    for dropc in LOSS_TRUNCATION_GRID:
        lt = replace(
            m,
            loss_truncation_dropc=dropc,
            loss_truncation_min_count=window,
            loss_truncation_recompute=min(m.loss_truncation_recompute, exp.size.n_train),
        )
        out[f"loss_truncation-c{dropc:g}"] = Variant("loss_truncation", lt)
    for eta in MIXCE_GRID:
        out[f"mixce-e{eta:g}"] = Variant("mixce", replace(m, mixce_eta=eta))
    for threshold in ENT_GRID:
        ent = replace(m, ent_threshold=threshold, ent_start=exp.size.warmup_updates)
        out[f"ent-t{threshold:g}"] = Variant("error_norm_truncation", ent)
    return out


def describe(name: str, v: Variant) -> str:
    """A row label with the settings that differ."""
    m = v.methods
    if v.kind == "tailr":
        return f"TaiLr gamma={m.tailr_gamma:g}, min weight={m.tailr_min_weight:g}"
    if v.kind == "degenerative":
        return f"LFD stage 1, R={m.truncation_ratio:g}"
    if v.kind == "lfd":
        ratio = (
            m.truncation_ratio
            if v.degenerative == "degenerative"
            else v.degenerative.split("R")[-1]
        )
        eos = ", EOS in product" if "--eos-in-product" in m.extra.get("lfd", []) else ""
        return f"LFD beta={m.degenerative_scale:g}, lambda={m.mle_weight:g}, R={ratio}{eos}"
    if v.kind == "unlikelihood":
        return f"Unlikelihood (unlikelihood) alpha={m.unlikelihood_alpha:g}"
    if v.kind == "loss_truncation":
        return (
            f"Loss truncation (loss_truncation) dropc={m.loss_truncation_dropc:g}, "
            f"min count={m.loss_truncation_min_count}, recompute={m.loss_truncation_recompute}"
        )
    if v.kind == "mixce":
        return f"MixCE (mixce) eta={m.mixce_eta:g}"
    if v.kind == "error_norm_truncation":
        return f"ENT (error_norm_truncation) threshold={m.ent_threshold:g}, start={m.ent_start}"
    return LABELS.get(name, name)


def run_sweep(exp: Experiment) -> str:
    """Train and score every sweep model (resumable); write sweep.md / sweep.json; return the table."""
    base = dict(exp.variants)
    extra = sweep_variants(exp)
    exp.variants.update(extra)
    steps = [(f"train-{n}", lambda n=n: exp.train(n)) for n in extra]
    for name in extra:
        steps += exp.evaluation_steps(name)
    for i, (name, fn) in enumerate(steps, 1):
        exp.stage(name, i, len(steps), fn)
    names = ["oracle", *base, *extra]
    rows = exp.rows(names)
    labelled = {}
    for n in names:
        label = LABELS.get(n, n) if n in base or n == "oracle" else describe(n, extra[n])
        if n in base and n != "oracle":
            label += f" [{describe(n, base[n])}]"
        labelled[label] = rows[n]
    table = markdown(labelled)
    (exp.work / "sweep.md").write_text(table + "\n")
    (exp.work / "sweep.json").write_text(json.dumps(labelled, indent=1))
    return table
