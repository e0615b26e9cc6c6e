"""fairseq criterions of this plugin; importing this package registers them."""
from . import lfd_poe, tailr, truncated_ce  # noqa: F401
