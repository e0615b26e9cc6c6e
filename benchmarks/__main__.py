"""``python -m benchmarks`` (from the repository root) is ``scripts/benchmark.py``."""

import sys

from .cli import main

sys.exit(main())
