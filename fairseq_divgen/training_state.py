"""Read the trainer's update count from inside a criterion."""
from fairseq.logging import metrics


def current_num_updates() -> int:
    """Number of updates the trainer has completed (0 before the first one).

    fairseq does not pass the update count to a criterion, but ``Trainer.set_num_updates``
    logs it to the root ("default") metrics aggregator after every update and on
    resume, and that aggregator is part of every checkpoint. Reading it there works
    with any task, so the criterions need no task of their own.
    """
    meter = metrics.get_meter("default", "num_updates")
    if meter is None or getattr(meter, "val", None) is None:
        return 0
    return int(meter.val)
