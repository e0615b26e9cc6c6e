"""Distributed training and resume leave the criterions' training unchanged.

On the CPU with gloo (``scripts/fairseq_worker.py``: every run of this module in one process for
one worker and one pair of processes for two):

- with ``--ddp-backend legacy_ddp``, for tailr, truncated_ce, lfd_poe (with
  translation_lfd) and loss_truncation, with and without ``--fused-output``: two workers
  equal one worker with ``--update-freq 2`` (same parameters, same logs); a run stopped
  after N updates and resumed from checkpoint_last.pt to 2N equals the uninterrupted
  2N run, with one worker and with two (truncated_ce's warm-up straddles the resume
  point; lfd_poe reloads its degenerative model; loss_truncation is the exception:
  fairseq checkpoints do not keep its loss history, which a resumed run rebuilds by
  the stated hot start, tested below); the checkpoints hold no criterion state and an
  optimizer over exactly the main model's parameters;
- with torch's DistributedDataParallel (``--ddp-backend pytorch_ddp``, fairseq's
  default on GPUs), with and without ``--find-unused-parameters``, and with ``no_c10d``:
  every criterion, with and without ``--fused-output``, on encoder-decoder and
  transformer_lm models with tied and untied output layers, two workers equal one
  worker with ``--update-freq 2`` (:data:`DDP`).

Why the two setups see the same batches: fairseq shuffles the epoch's batches
with the seed, then gives rank r the batches r, r + W, r + 2W, ...; with one
worker, --update-freq 2 groups batches 2k and 2k + 1 into update k, which are
exactly what ranks 0 and 1 take in update k. Every batch is full (300 training
pairs, --batch-size 25, --required-batch-size-multiple 1, so 12 batches an
epoch), dropout is 0 (the dropout RNG differs per rank), and truncated_ce
truncates per forward batch, which is one micro-batch in both setups.
loss_truncation's cutoff depends on the sequence losses of all workers in all
earlier updates: 50 sequences an update, so with --min-count 100 --recompute 100 it
truncates from update 3 on (the median of updates 1-2), with a cutoff recomputed
before updates 3, 5 and 7.
"""

import pytest
import torch
from fairseq import checkpoint_utils

import tiny
import workers

N = 4  # updates before the resume; every run ends at 2N (an epoch is 6 updates)
WARMUP = 6  # truncated_ce's warm-up ends between the resume point and 2N
LT_MIN_COUNT = 100  # loss_truncation's hot start: the first 2 updates (50 sequences each)
LT_REBUILT = "training resumes at update 4; fairseq checkpoints do not keep the loss history"
TOL = 1e-5
LOADED = "loaded degenerative model from"
EXACT_BATCHES = [
    "--batch-size",
    "25",
    "--required-batch-size-multiple",
    "1",
    "--max-tokens",
    "4000",  # overrides the tiny default: sentences, not tokens, make a batch
    "--dropout",
    "0",
]
LS = ["--label-smoothing", "0.1"]
CRITERIA = {
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
        str(WARMUP),
    ],
    "lfd_poe": [
        "--criterion",
        "lfd_poe",
        "--degenerative-scale",
        "1.0",
        "--mle-weight",
        "0.5",
        *LS,
    ],
    "loss_truncation": [
        "--criterion",
        "loss_truncation",
        "--dropc",
        "0.5",
        "--min-count",
        str(LT_MIN_COUNT),
        "--recompute",
        "100",
        *LS,
    ],
    "unlikelihood": ["--criterion", "unlikelihood", "--rank-alpha", "1.0"],
    "mixce": ["--criterion", "mixce", "--mixing-ratio", "0.5"],
    "error_norm_truncation": [
        "--criterion",
        "error_norm_truncation",
        *LS,
        "--token-prune-threshold",
        "1.0",
        "--start-prune-iteration",
        "2",
    ],
}
LEGACY = ["tailr", "truncated_ce", "lfd_poe", "loss_truncation"]
# The same with the fused output path (--fused-output): the criterion's sums and gradients
# come chunk by chunk from the decoder features; distributed training, --update-freq and
# resume must not notice.
FUSED = " (fused)"
FALLBACK = "computes the unfused loss"  # the warning of a model the fused path does not cover
MODELS = {
    "translation": ("translation", tiny.TINY_TRANSFORMER),  # tied (--share-all-embeddings)
    "translation untied": (
        "translation",
        [a for a in tiny.TINY_TRANSFORMER if a != "--share-all-embeddings"],
    ),
    "lm untied": ("language_modeling", tiny.TINY_LM),
    "lm tied": ("language_modeling", [*tiny.TINY_LM, "--share-decoder-input-output-embed"]),
}
FIND_UNUSED = "pytorch_ddp --find-unused-parameters"
BACKENDS = {
    "pytorch_ddp": ["--ddp-backend", "pytorch_ddp"],
    FIND_UNUSED: ["--ddp-backend", "pytorch_ddp", "--find-unused-parameters"],
    "no_c10d": ["--ddp-backend", "no_c10d"],
}
ALL = list(CRITERIA)
# (criterion, fused, model, backend): every criterion fused and unfused under the strictest
# DDP setting on an untied output layer (the projection's weight is used only by the fused
# loss), every criterion fused under plain DDP on a tied one, language models tied and
# untied, and no_c10d.
DDP = (
    [(c, fused, "translation untied", FIND_UNUSED) for c in ALL for fused in (False, True)]
    + [(c, True, "translation", "pytorch_ddp") for c in ALL]
    + [
        ("tailr", True, "lm untied", FIND_UNUSED),
        ("tailr", True, "lm tied", FIND_UNUSED),
        ("unlikelihood", True, "lm untied", "pytorch_ddp"),
        ("mixce", False, "lm untied", FIND_UNUSED),
        ("tailr", True, "translation untied", "no_c10d"),
        ("lfd_poe", True, "translation untied", "no_c10d"),
    ]
)


def _case(criterion, fused):
    return criterion + (FUSED if fused else "")


def _ddp_id(entry):
    criterion, fused, model, backend = entry
    return f"{_case(criterion, fused)}, {model}, {backend}"


class Runs:
    """Every run the tests compare, planned up front and trained once per module."""

    def __init__(self, translation, lm, degenerative, root):
        self.data = {"translation": translation, "language_modeling": lm}
        self.degenerative = degenerative
        self.root = root
        self.plan = workers.Plan(root)
        self.saves = {}

    def args(self, criterion, fused, model, save, max_update, update_freq, backend="legacy_ddp"):
        task, arch = MODELS[model]
        flags = list(CRITERIA[criterion]) + (["--fused-output"] if fused else [])
        if criterion == "lfd_poe":
            task = task + "_lfd"
            flags += ["--degenerative-checkpoint", self.degenerative]
        return [
            self.data[task.replace("_lfd", "")],
            "--task",
            task,
            *arch,
            *tiny.common_train_args(save, max_update),
            *EXACT_BATCHES,
            "--update-freq",
            str(update_freq),
            *flags,
            *BACKENDS.get(backend, ["--ddp-backend", backend]),
        ]

    def add(self, criterion, fused, setup, model="translation", backend="legacy_ddp"):
        """Plan ``setup``: "one" (1 worker, --update-freq 2, 2N updates), "two" (2 workers),
        or either + "-resumed" (N, then resumed to 2N in the same folder)."""
        key = (_case(criterion, fused), setup, model, backend)
        if key in self.saves:
            return
        save = self.root / f"run{len(self.saves):03d}"
        two = setup.startswith("two")
        freq, world = (1, 2) if two else (2, 1)
        be = backend if two else "legacy_ddp"  # one worker: no DDP wrapper at all
        if setup.endswith("-resumed"):
            self.plan.add(
                key + ("first part",), self.args(criterion, fused, model, save, N, freq, be), world
            )
        self.plan.add(key, self.args(criterion, fused, model, save, 2 * N, freq, be), world)
        self.saves[key] = save

    def get(self, case, setup, model="translation", backend="legacy_ddp"):
        """(save dir, output) of a planned run (a resumed run's output is its second part's)."""
        key = (case, setup, model, backend)
        return self.saves[key], self.plan.output(key)


@pytest.fixture(scope="module")
def runs(translation_data, lm_data, translation_degenerative, tmp_path_factory):
    runs = Runs(
        translation_data / "bin",
        lm_data / "bin",
        translation_degenerative,
        tmp_path_factory.mktemp("distributed"),
    )
    for criterion in LEGACY:
        for fused in (False, True):
            runs.add(criterion, fused, "one")
            runs.add(criterion, fused, "two")
    for case, setup in RESUMED + LT_RESUMED:
        criterion, fused = case.replace(FUSED, ""), case.endswith(FUSED)
        runs.add(criterion, fused, setup)
        runs.add(criterion, fused, setup + "-resumed")
    for criterion, fused, model, backend in DDP:
        runs.add(criterion, fused, "one", model)
        runs.add(criterion, fused, "two", model, backend)
    runs.plan.execute()
    return runs


def _logs(output):
    return {
        kind: workers.training_records(tiny.json_logs(output, kind))
        for kind in ("train_inner", "valid")
    }


def _two_equals_one(runs, case, model="translation", backend="legacy_ddp"):
    one_dir, one_out = runs.get(case, "one", model)
    two_dir, two_out = runs.get(case, "two", model, backend)
    one, two = _logs(one_out), _logs(two_out)
    assert [int(r["num_updates"]) for r in two["train_inner"]] == list(range(1, 2 * N + 1))
    assert all(r["bsz"] == "50" for r in one["train_inner"] + two["train_inner"])
    assert len(two["valid"]) == 2 and workers.all_finite(two["train_inner"])
    diff = workers.max_abs_param_diff(
        one_dir / "checkpoint_last.pt", two_dir / "checkpoint_last.pt"
    )
    print(
        f"{case}, {model}, {backend}: 2 workers vs 1 worker --update-freq 2: max abs parameter "
        f"difference {diff:.3g}, max train loss difference "
        f"{workers.max_loss_diff(one['train_inner'], two['train_inner']):.3g}"
    )
    assert diff <= TOL
    assert one == two  # every logged value (loss, nll_loss, the criterion's own, gnorm, lr ...)
    assert FALLBACK not in one_out + two_out


@pytest.mark.parametrize("case", [_case(c, f) for c in LEGACY for f in (False, True)])
def test_two_workers_equal_one_worker_with_update_freq_2(runs, case):
    _two_equals_one(runs, case)


@pytest.mark.parametrize("entry", DDP, ids=_ddp_id)
def test_torch_ddp_two_workers_equal_one_worker_with_update_freq_2(runs, entry):
    criterion, fused, model, backend = entry
    _two_equals_one(runs, _case(criterion, fused), model, backend)


RESUMED = [(case, setup) for case in ("truncated_ce", "lfd_poe") for setup in ("one", "two")] + [
    (case + FUSED, "two") for case in ("tailr", "truncated_ce", "lfd_poe")
]
LT_RESUMED = [
    ("loss_truncation", "one"),
    ("loss_truncation", "two"),
    ("loss_truncation" + FUSED, "two"),
]


@pytest.mark.parametrize("case,setup", RESUMED)
def test_resume_equals_uninterrupted(runs, case, setup):
    full_dir, full_out = runs.get(case, setup)
    part_dir, part_out = runs.get(case, setup + "-resumed")
    full, part = _logs(full_out), _logs(part_out)
    assert "Loaded checkpoint" in part_out
    assert [int(r["num_updates"]) for r in part["train_inner"]] == list(range(N + 1, 2 * N + 1))
    diff = workers.max_abs_param_diff(
        full_dir / "checkpoint_last.pt", part_dir / "checkpoint_last.pt"
    )
    print(
        f"{case}, {setup} worker(s): resumed at {N} vs uninterrupted: max abs parameter "
        f"difference {diff:.3g}, max train loss difference "
        f"{workers.max_loss_diff(full['train_inner'][N:], part['train_inner']):.3g}"
    )
    assert diff <= TOL
    assert part["train_inner"] == full["train_inner"][N:]
    assert part["valid"] == full["valid"]  # both validate at the epoch's end and at 2N
    if case.startswith("truncated_ce"):  # plain CE (loss == nll_loss) up to WARMUP, then truncated
        warm = [r["loss"] == r["nll_loss"] for r in part["train_inner"]]
        assert warm == [N + i <= WARMUP for i in range(1, N + 1)]
    if case.startswith("lfd_poe"):
        assert part_out.count(LOADED) == 1


@pytest.mark.parametrize("case,setup", LT_RESUMED)
def test_loss_truncation_resume_rebuilds_the_history_by_the_hot_start(runs, case, setup):
    """The history is not in the checkpoint: after the resume at update N, the next
    --min-count (100) sequence losses (updates N+1 and N+2, 50 sequences each) train as
    plain MLE, a warning says so, then truncation resumes, exactly as the run began.
    The uninterrupted run truncates throughout, which the resumed run cannot match."""
    _, full_out = runs.get(case, setup)
    _, part_out = runs.get(case, setup + "-resumed")
    full, part = _logs(full_out)["train_inner"], _logs(part_out)["train_inner"]
    assert LT_REBUILT in part_out and LT_REBUILT not in full_out
    assert [int(r["num_updates"]) for r in part] == list(range(N + 1, 2 * N + 1))
    kept_full = [float(r["lt_kept_ratio"]) for r in full]
    kept_part = [float(r["lt_kept_ratio"]) for r in part]
    # Hot start (no cutoff, every sequence kept), then truncation with a cutoff. One
    # update may keep all its sequences when the losses fall below a cutoff computed
    # earlier, so "truncation drops something" is asserted over all truncating updates.
    assert kept_full[:2] == [1, 1] and kept_part[:2] == [1, 1]
    assert [r.get("lt_cutoff") is None for r in full] == [True, True] + [False] * (2 * N - 2)
    assert [r.get("lt_cutoff") is None for r in part] == [True, True, False, False]
    assert min(kept_full[2:] + kept_part[2:]) < 1


def _main_model_parameters(checkpoint, data):
    models, _cfg, _task = checkpoint_utils.load_model_ensemble_and_task(
        [str(checkpoint)], arg_overrides={"data": str(data)}
    )
    return [tuple(p.shape) for p in models[0].parameters()]


@pytest.mark.parametrize("case", [_case(c, f) for c in LEGACY for f in (False, True)])
def test_checkpoint_holds_no_criterion_state_and_optimizer_over_main_model_only(runs, case):
    save, _ = runs.get(case, "two")
    ckpt = torch.load(save / "checkpoint_last.pt", map_location="cpu")
    assert not ckpt.get("criterion")  # fairseq saves it (and wraps it in DDP) only with parameters
    optim = ckpt["last_optimizer_state"]
    (group,) = optim["param_groups"]
    adam_shapes = [tuple(optim["state"][i]["exp_avg"].shape) for i in group["params"]]
    assert adam_shapes == _main_model_parameters(
        save / "checkpoint_last.pt", runs.data["translation"]
    )
