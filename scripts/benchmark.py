#!/usr/bin/env python3
"""Training throughput and peak memory of every criterion (see ``--help``).

Development tooling (``benchmarks/``, not part of the installed plugin); run it
with the project's environment from anywhere, e.g.
``.venv/bin/python scripts/benchmark.py --arch small --vocab 8000``.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
