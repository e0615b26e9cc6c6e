"""fairseq tasks of this plugin; importing this package registers them."""

from . import language_modeling_lfd, translation_lfd  # noqa: F401
