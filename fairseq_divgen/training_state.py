"""Read the trainer's update count from inside a criterion."""
from fairseq.logging import metrics

# Where fairseq-train's loop keeps a live "num_updates" meter besides the active
# aggregators: the root one, and "train", which is still live during validation.
_REGISTERED = ("default", "train")


def current_num_updates() -> int:
    """Number of updates the trainer has completed (0 before the first one).

    fairseq does not pass the update count to a criterion, but ``Trainer.set_num_updates``
    logs it to every active metrics aggregator after every update and on resume.
    On resume, ``metrics.load_state_dict`` replaces the registered aggregators with
    copies frozen at the resume point while the trainer keeps logging to the live
    ones, and validation runs under a fresh root aggregator. The count only grows
    within a run, so the largest value found among the active aggregators and the
    registered "default" and "train" ones is the live count in every case.
    """
    meters = [agg.get("num_updates") for agg in metrics.get_active_aggregators()]
    meters += [metrics.get_meter(name, "num_updates") for name in _REGISTERED]
    values = [int(m.val) for m in meters if getattr(m, "val", None) is not None]
    return max(values, default=0)
