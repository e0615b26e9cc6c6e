"""The docs show what the measuring commands wrote, and their links lead somewhere."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SYNC = ROOT / "scripts" / "sync_docs.py"
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def _sync(docs: Path, *flags):
    return subprocess.run(
        [sys.executable, str(SYNC), "--docs", str(docs), *flags], capture_output=True, text=True
    )


def test_every_measured_table_in_the_docs_equals_the_file_its_command_wrote():
    result = _sync(ROOT / "docs", "--check")
    assert result.returncode == 0, result.stdout + result.stderr


def test_sync_rewrites_a_stale_block_and_check_then_passes(tmp_path):
    (tmp_path / "measured").mkdir()
    (tmp_path / "measured" / "t.md").write_text("| a |\n|---|\n| 2 |\n")
    page = tmp_path / "page.md"
    page.write_text(
        "# P\n\n<!-- include: measured/t.md -->\n| a |\n|---|\n| 1 |\n<!-- end include -->\n\ntext\n"
    )
    assert _sync(tmp_path, "--check").returncode == 1
    assert _sync(tmp_path).returncode == 0
    assert (
        page.read_text()
        == "# P\n\n<!-- include: measured/t.md -->\n| a |\n|---|\n| 2 |\n<!-- end include -->\n\ntext\n"
    )
    assert _sync(tmp_path, "--check").returncode == 0


def test_an_include_of_a_missing_file_is_an_error_naming_it(tmp_path):
    (tmp_path / "page.md").write_text(
        "<!-- include: measured/gone.md -->\nold\n<!-- end include -->\n"
    )
    result = _sync(tmp_path, "--check")
    assert result.returncode != 0 and "measured/gone.md does not exist" in result.stderr


@pytest.mark.parametrize(
    "page", [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))], ids=lambda p: p.name
)
def test_relative_links_lead_to_files_that_exist(page):
    for target in LINK.findall(page.read_text(encoding="utf-8")):
        if "://" in target or target.startswith("mailto:"):
            continue
        assert (page.parent / target).exists(), (
            f"{page.name} links to {target}, which does not exist"
        )
