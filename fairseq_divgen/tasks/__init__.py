"""fairseq tasks of this plugin; importing this package registers them."""
