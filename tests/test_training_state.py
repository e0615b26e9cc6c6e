"""The update count a criterion reads follows the trainer through a resume and validation.

The sequence below is what fairseq 0.12's trainer and fairseq-train's loop do with
the metrics registry: ``Trainer.set_num_updates`` logs ``num_updates`` after each
update and on resume, ``Trainer.load_checkpoint`` then restores the saved meters
(``metrics.load_state_dict``), ``train()`` runs under ``metrics.aggregate("train")``
and validation under ``metrics.aggregate(new_root=True)``.
"""
import pytest
from fairseq.logging import metrics

from fairseq_divgen.training_state import current_num_updates


def _set_num_updates(n):
    metrics.log_scalar("num_updates", n, weight=0, priority=200)


@pytest.fixture(autouse=True)
def fresh_metrics():
    metrics.reset()
    yield
    metrics.reset()


def test_counts_updates_of_a_fresh_run():
    assert current_num_updates() == 0
    with metrics.aggregate("train"):
        for n in (1, 2, 3):
            _set_num_updates(n)
            assert current_num_updates() == n
        with metrics.aggregate(new_root=True):  # validation
            assert current_num_updates() == 3


def test_keeps_counting_after_the_saved_meters_are_restored():
    with metrics.aggregate("train"):
        _set_num_updates(4)
    saved = metrics.state_dict()  # what checkpoint_last.pt holds at update 4

    metrics.reset()  # a new fairseq-train process resumes
    _set_num_updates(4)  # load_checkpoint: set_num_updates, then the saved meters
    metrics.load_state_dict(saved)
    assert current_num_updates() == 4
    with metrics.aggregate("train"):
        for n in (5, 6, 7):
            assert current_num_updates() == n - 1  # read during update n
            _set_num_updates(n)
        with metrics.aggregate(new_root=True):  # validation after update 7
            assert current_num_updates() == 7
