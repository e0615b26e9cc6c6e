"""fairseq-train's update count, read from inside a criterion's training forward."""

from fairseq.logging import metrics


def trainer_num_updates() -> int:
    """Updates the trainer has completed (0 before its first one), during training.

    fairseq passes the count to the task's ``train_step`` but not to the criterion.
    ``Trainer.set_num_updates`` logs it, after every update and when a checkpoint's
    optimizer state is restored, to the active metrics aggregators, and the live root
    aggregator ("default") is active throughout fairseq-train's training loop. Only
    that root is read: when fairseq restores the saved meters (a resume without
    ``--reset-meters``) it swaps in frozen copies under the same names, which still
    hold the checkpoint's count after ``--reset-optimizer``, ``--finetune-from-model``
    and the like restart the trainer's own. So the value is the trainer's count in
    every resume / reset / fine-tune case. Outside training (validation runs under a
    new root) it is meaningless; the criteria of this package do not read it there.
    """
    root = getattr(metrics, "_active_aggregators", {}).get("default")
    if root is None:  # a fairseq without that registry: the first active aggregator
        active = metrics.get_active_aggregators()
        root = active[0] if active else None
    meter = root.get("num_updates") if root is not None else None
    value = getattr(meter, "val", None)
    return int(value) if value is not None else 0
