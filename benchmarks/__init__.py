"""Training-cost benchmark of the criterions (``scripts/benchmark.py``).

Not imported by the package itself: importing ``fairseq_divgen`` registers only the
user-facing criterions. The benchmark additionally registers
``tailr_naive_reference`` (see :mod:`.naive_tailr`) in its own processes.
"""
