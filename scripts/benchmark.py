#!/usr/bin/env python3
"""Training throughput and peak memory of every criterion (see ``--help``).

Same as the ``divgen-benchmark`` console command; run it with the project's
environment, e.g. ``.venv/bin/python scripts/benchmark.py --arch small --vocab 8000``.
"""
import sys

from fairseq_divgen.benchmark.cli import main

if __name__ == "__main__":
    sys.exit(main())
