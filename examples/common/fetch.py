"""Download a public archive (with fallback addresses) and unpack archives.

    python fetch.py download DEST URL [URL ...]   # first address that answers wins
    python fetch.py extract ARCHIVE DEST_DIR      # .zip, .tgz, .tar.gz, .tar

A file already at DEST is kept (put a copy there by hand where a download is
blocked); a partial download is written to DEST.part and renamed only when complete.
"""

import os
import shutil
import sys
import tarfile
import urllib.request
import zipfile
from pathlib import Path


def download(dest: Path, urls) -> None:
    """Fetch the first of ``urls`` that answers into ``dest`` (kept if it exists)."""
    if dest.exists():
        print(f"{dest}: present, not downloaded again")
        return
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    errors = []
    for url in urls:
        print(f"downloading {url} -> {dest}", flush=True)
        try:
            with urllib.request.urlopen(url, timeout=60) as response, open(part, "wb") as out:
                shutil.copyfileobj(response, out, length=1 << 20)
        except OSError as err:  # URLError and HTTPError are OSErrors
            errors.append(f"  {url}: {err}")
            continue
        part.rename(dest)
        return
    part.unlink(missing_ok=True)
    sys.exit(
        f"error: could not download {dest.name}:\n"
        + "\n".join(errors)
        + f"\nDownload it by other means and place it at {dest}, then rerun."
    )


def extract(archive: Path, dest: Path) -> None:
    """Unpack a zip or tar archive into ``dest`` (refusing paths that leave it)."""
    if not archive.is_file():
        sys.exit(f"error: {archive}: no such archive")
    dest.mkdir(parents=True, exist_ok=True)
    root = dest.resolve()
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as z:
            names = z.namelist()
            _check_inside(root, names, archive)
            z.extractall(dest)
    elif tarfile.is_tarfile(archive):
        with tarfile.open(archive) as t:
            members = [m for m in t.getmembers() if m.isfile() or m.isdir()]
            _check_inside(root, [m.name for m in members], archive)
            t.extractall(dest, members=members)
    else:
        sys.exit(
            f"error: {archive} is neither a zip nor a tar archive (an HTML page served instead of "
            "the file?); delete it, download the file by other means to that path, and rerun."
        )
    print(f"extracted {archive} -> {dest}")


def _check_inside(root: Path, names, archive: Path) -> None:
    for name in names:
        target = str((root / name).resolve())
        if os.path.commonpath([str(root), target]) != str(root):
            sys.exit(f"error: {archive} contains a path outside the target folder: {name}")


def main(argv) -> None:
    """Command-line entry: ``download`` or ``extract``."""
    if len(argv) >= 3 and argv[0] == "download":
        download(Path(argv[1]), argv[2:])
    elif len(argv) == 3 and argv[0] == "extract":
        extract(Path(argv[1]), Path(argv[2]))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
