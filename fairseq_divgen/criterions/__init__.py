"""fairseq criterions of this plugin; importing this package registers them."""
from . import tailr, truncated_ce  # noqa: F401
