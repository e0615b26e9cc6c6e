"""Flag checks shared by the criterions and the demo (run before any data is loaded);
pure Python, so the demo checks its flags before importing fairseq."""


def check_range(flag, value, low, high, low_open=False, high_open=False, why=""):
    """Raise ValueError naming ``flag`` unless ``value`` lies in [low, high] (an end
    marked open excluded); ``why`` is appended to the message."""
    bad = not (low <= value <= high) or (low_open and value == low) or (high_open and value == high)
    if bad:  # NaN is bad too
        interval = ("(" if low_open else "[") + f"{low}, {high}" + (")" if high_open else "]")
        raise ValueError(f"{flag} must be in {interval}, got {value}{why}")


def check_non_negative(flag, value):
    """Raise ValueError naming ``flag`` if ``value`` is negative."""
    if not value >= 0:
        raise ValueError(f"{flag} must be >= 0, got {value}")


def check_weight(flag, value, limit=1e4):
    """Raise ValueError naming ``flag`` unless 0 <= ``value`` <= ``limit``: a loss weight
    far beyond that (or inf) only makes the loss overflow, which fairseq would report
    later as NaN gradients."""
    if not 0 <= value <= limit:
        raise ValueError(
            f"{flag} must be >= 0 and at most {limit:g} (a larger weight only makes the loss "
            f"overflow), got {value}"
        )
