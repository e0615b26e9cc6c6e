#!/usr/bin/env python3
"""Copy measured tables into the docs pages that show them.

Every measured table of ``docs/`` is written by the command that measures it (the
demo, the studies, the benchmark) into a file under ``docs/measured/``. A page shows
such a file between two markers::

    <!-- include: measured/demo.md -->
    ...the file's text, copied here by this script...
    <!-- end include -->

(the path is relative to the page). Rerunning a command, copying its output to
``docs/measured/`` and running

    python scripts/sync_docs.py            # rewrite the blocks
    python scripts/sync_docs.py --check    # exit 1 if a block differs from its file

is how a page is updated; ``tests/test_docs.py`` runs the check. The README's blocks
(paths relative to the repository root) are refreshed with the docs'.
"""

import argparse
import re
import sys
from pathlib import Path
from typing import List, Tuple

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
BLOCK = re.compile(
    r"(<!-- include: (?P<path>[^ ]+) -->\n)(?P<body>.*?)(<!-- end include -->)", re.DOTALL
)


def synced(page: Path) -> Tuple[str, List[str]]:
    """The page's text with every include block refreshed, and the included paths."""
    text = page.read_text(encoding="utf-8")
    paths = []

    def refresh(m: re.Match) -> str:
        source = (page.parent / m.group("path")).resolve()
        if not source.is_file():
            raise SystemExit(f"{page}: included file {m.group('path')} does not exist")
        paths.append(m.group("path"))
        body = source.read_text(encoding="utf-8").rstrip("\n") + "\n"
        return m.group(1) + body + m.group(4)

    return BLOCK.sub(refresh, text), paths


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="only report pages that are out of date")
    p.add_argument("--docs", type=Path, default=DOCS)
    args = p.parse_args(argv)
    stale = []
    pages = sorted(args.docs.rglob("*.md"))
    if args.docs.resolve() == DOCS:
        pages.append(ROOT / "README.md")
    for page in pages:
        if page.parent.name == "measured":
            continue
        new, _ = synced(page)
        if new != page.read_text(encoding="utf-8"):
            stale.append(page)
            if not args.check:
                page.write_text(new, encoding="utf-8")
    for page in stale:
        print(f"{'out of date' if args.check else 'updated'}: {page}")
    return 1 if (args.check and stale) else 0


if __name__ == "__main__":
    sys.exit(main())
