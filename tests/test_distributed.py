"""Distributed training and resume leave the criterions' training unchanged.

For tailr, truncated_ce, lfd_poe (with translation_lfd) and loss_truncation, on CPU
with gloo:
- two workers equal one worker with --update-freq 2 (same parameters, same logs);
- a run stopped after N updates and resumed from checkpoint_last.pt to 2N equals
  the uninterrupted 2N run, with one worker and with two (truncated_ce's warm-up
  straddles the resume point; lfd_poe reloads its degenerative model;
  loss_truncation is the exception: fairseq checkpoints do not keep its loss
  history, which a resumed run rebuilds by the stated hot start, tested below);
- the checkpoints hold no criterion state and an optimizer over exactly the main
  model's parameters;
- all of it also with --fused-output for the four criterions (the resume checks with
  two workers, and tailr's too).

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
import shutil

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
    "--batch-size", "25", "--required-batch-size-multiple", "1",
    "--max-tokens", "4000",  # overrides the tiny default: sentences, not tokens, make a batch
    "--dropout", "0",
]  # fmt: skip
CRITERIA = {
    "tailr": ["--criterion", "tailr", "--label-smoothing", "0.1",
              "--density-ratio-threshold", "0.1", "--density-min-weight", "0.3"],
    "truncated_ce": ["--criterion", "truncated_ce", "--truncation-ratio", "0.5",
                     "--truncation-warmup-updates", str(WARMUP)],
    "lfd_poe": ["--criterion", "lfd_poe", "--degenerative-scale", "1.0",
                "--mle-weight", "0.5", "--label-smoothing", "0.1"],
    "loss_truncation": ["--criterion", "loss_truncation", "--dropc", "0.5", "--min-count",
                        str(LT_MIN_COUNT), "--recompute", "100", "--label-smoothing", "0.1"],
}  # fmt: skip
# The same with the fused output path (--fused-output): the criterion's sums and gradients
# come chunk by chunk from the decoder features; distributed training, --update-freq and
# resume must not notice.
FUSED = " (fused)"
CRITERIA.update({name + FUSED: [*flags, "--fused-output"] for name, flags in list(CRITERIA.items())})
FALLBACK = "computes the unfused loss"  # the warning of a model the fused path does not cover


def _base(case):
    return case[: -len(FUSED)] if case.endswith(FUSED) else case


class Runs:
    """The training runs the tests compare, each run once per module and kept."""

    def __init__(self, data, root):
        self.data, self.root, self.done = data, root, {}

    def args(self, case, save, max_update, update_freq=1):
        task, flags = "translation", CRITERIA[case]
        if _base(case) == "lfd_poe":
            task, flags = "translation_lfd", [*flags, "--degenerative-checkpoint", self.degenerative()]
        return [self.data, "--task", task, *tiny.TINY_TRANSFORMER,
                *tiny.common_train_args(save, max_update), *EXACT_BATCHES,
                "--update-freq", str(update_freq), *flags]  # fmt: skip

    def degenerative(self):
        """The degenerative model: the one-worker truncated_ce run's checkpoint."""
        path = self.root / "degenerative.pt"
        if not path.exists():
            shutil.copy(self.get("truncated_ce", "one")[0] / "checkpoint_last.pt", path)
        return path

    def get(self, case, setup):
        """(save dir, output) of ``setup``: "one" (1 worker, --update-freq 2, 2N
        updates), "two" (2 workers, 2N), or either + "-resumed" (N, then resumed to 2N);
        a resumed run's output is that of its second part."""
        key = (case, setup)
        if key not in self.done:
            save = self.root / f"{case}-{setup}"
            two = setup.startswith("two")
            train = workers.train_two_workers if two else workers.train_one_worker
            freq = 1 if two else 2
            if setup.endswith("-resumed"):
                train(self.args(case, save, N, freq))
            self.done[key] = (save, train(self.args(case, save, 2 * N, freq)))
        return self.done[key]


@pytest.fixture(scope="module")
def runs(translation_data, tmp_path_factory):
    return Runs(translation_data / "bin", tmp_path_factory.mktemp("distributed"))


def _logs(output):
    return {kind: workers.training_records(tiny.json_logs(output, kind)) for kind in ("train_inner", "valid")}


@pytest.mark.parametrize("case", list(CRITERIA))
def test_two_workers_equal_one_worker_with_update_freq_2(runs, case):
    one_dir, one_out = runs.get(case, "one")
    two_dir, two_out = runs.get(case, "two")
    one, two = _logs(one_out), _logs(two_out)
    assert [int(r["num_updates"]) for r in two["train_inner"]] == list(range(1, 2 * N + 1))
    assert all(r["bsz"] == "50" for r in one["train_inner"] + two["train_inner"])
    assert len(two["valid"]) == 2 and workers.all_finite(two["train_inner"])
    diff = workers.max_abs_param_diff(one_dir / "checkpoint_last.pt", two_dir / "checkpoint_last.pt")
    print(f"{case}: 2 workers vs 1 worker --update-freq 2: max abs parameter difference {diff:.3g}, "
          f"max train loss difference {workers.max_loss_diff(one['train_inner'], two['train_inner']):.3g}")
    assert diff <= TOL
    assert one == two  # every logged value (loss, nll_loss, the criterion's own, gnorm, lr ...)
    assert FALLBACK not in one_out + two_out


RESUMED = [(case, setup) for case in ("truncated_ce", "lfd_poe") for setup in ("one", "two")] + [
    (case + FUSED, "two") for case in ("tailr", "truncated_ce", "lfd_poe")
]


@pytest.mark.parametrize("case,setup", RESUMED)
def test_resume_equals_uninterrupted(runs, case, setup):
    full_dir, full_out = runs.get(case, setup)
    part_dir, part_out = runs.get(case, setup + "-resumed")
    full, part = _logs(full_out), _logs(part_out)
    assert "Loaded checkpoint" in part_out
    assert [int(r["num_updates"]) for r in part["train_inner"]] == list(range(N + 1, 2 * N + 1))
    diff = workers.max_abs_param_diff(full_dir / "checkpoint_last.pt", part_dir / "checkpoint_last.pt")
    print(f"{case}, {setup} worker(s): resumed at {N} vs uninterrupted: max abs parameter "
          f"difference {diff:.3g}, max train loss difference "
          f"{workers.max_loss_diff(full['train_inner'][N:], part['train_inner']):.3g}")
    assert diff <= TOL
    assert part["train_inner"] == full["train_inner"][N:]
    assert part["valid"] == full["valid"]  # both validate at the epoch's end and at 2N
    if _base(case) == "truncated_ce":  # plain CE (loss == nll_loss) up to WARMUP, then truncated
        warm = [r["loss"] == r["nll_loss"] for r in part["train_inner"]]
        assert warm == [N + i <= WARMUP for i in range(1, N + 1)]
    if _base(case) == "lfd_poe":
        assert part_out.count(LOADED) == 1


@pytest.mark.parametrize("case,setup", [("loss_truncation", "one"), ("loss_truncation", "two"),
                                        ("loss_truncation" + FUSED, "two")])
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


@pytest.mark.parametrize("case", list(CRITERIA))
def test_checkpoint_holds_no_criterion_state_and_optimizer_over_main_model_only(runs, case):
    save, _ = runs.get(case, "two")
    ckpt = torch.load(save / "checkpoint_last.pt", map_location="cpu")
    assert not ckpt.get("criterion")  # fairseq saves it (and wraps it in DDP) only with parameters
    optim = ckpt["last_optimizer_state"]
    (group,) = optim["param_groups"]
    adam_shapes = [tuple(optim["state"][i]["exp_avg"].shape) for i in group["params"]]
    assert adam_shapes == _main_model_parameters(save / "checkpoint_last.pt", runs.data)
