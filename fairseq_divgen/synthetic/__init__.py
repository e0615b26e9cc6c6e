"""The synthetic-oracle experiment behind ``divgen-demo`` (TaiLr paper, Sec. 5.1, made offline)."""
