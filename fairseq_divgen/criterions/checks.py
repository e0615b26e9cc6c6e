"""Configuration checks shared by the criterions (run before any data is loaded)."""


def check_range(flag, value, low, high, low_open=False):
    """Raise ValueError naming ``flag`` unless ``value`` lies in [low, high] (or (low, high])."""
    bad = not (low <= value <= high) or (low_open and value == low)  # NaN is bad too
    if bad:
        interval = ("(" if low_open else "[") + f"{low}, {high}]"
        raise ValueError(f"{flag} must be in {interval}, got {value}")


def check_non_negative(flag, value):
    """Raise ValueError naming ``flag`` if ``value`` is negative."""
    if not value >= 0:
        raise ValueError(f"{flag} must be >= 0, got {value}")
