"""fairseq criterions of this plugin; importing this package registers them."""

from .. import register  # noqa: E402  (the tasks and the checkpoint allowlist too)
from . import (  # noqa: F401
    error_norm_truncation,
    lfd_poe,
    loss_truncation,
    mixce,
    tailr,
    truncated_ce,
    unlikelihood,
)

register()
