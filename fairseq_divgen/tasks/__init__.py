"""fairseq tasks of this plugin; importing this package registers them."""

from .. import register  # noqa: E402  (the criterions and the checkpoint allowlist too)
from . import language_modeling_lfd, translation_lfd  # noqa: F401

register()
