"""The artifact folder's manifest (``quantkit.json``); its model card is ``quantkit.core.card``.

Every artifact - whatever the method - carries the same manifest: what it is, what it was made
from, how, with which library versions, and the sha256 of each file. Engines are chosen from it.
"""

import datetime as _dt
import hashlib
import json
from importlib import metadata
from pathlib import Path

from quantkit import __version__
from quantkit.core.atomic import read_json
from quantkit.core.errors import InputError, IntegrityError

MANIFEST = "quantkit.json"
SOURCE_MANIFEST = "quantkit-source.json"  # written next to downloaded or bundled checkpoints
CARD = "README.md"
RESULTS_FILE = "quantkit-results.json"  # measured results beside the card
SCHEMA = 1


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def file_table(folder: Path, skip: tuple[str, ...] = (MANIFEST, CARD, RESULTS_FILE)) -> list[dict]:
    """Path, size and sha256 of every file below ``folder`` (sorted; manifest, card and results
    left out because they are written after the table and change when results are filled in)."""
    rows = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = path.relative_to(folder).as_posix()
        if rel in skip:
            continue
        rows.append({"path": rel, "size": path.stat().st_size, "sha256": sha256_file(path)})
    return rows


def library_versions(*names: str) -> dict[str, str]:
    """Installed versions of the named distributions (missing ones are left out)."""
    found = {"quantkit": __version__}
    for name in names:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return found


def now_iso() -> str:
    return _dt.datetime.now(_dt.UTC).replace(microsecond=0).isoformat()


def write_manifest(folder: Path, manifest: dict) -> dict:
    """Complete ``manifest`` with schema, version, time and the file table, then write it."""
    full = {"schema": SCHEMA, "quantkit_version": __version__, "created": now_iso(), **manifest}
    full["files"] = file_table(folder)
    full.setdefault("size_bytes", sum(row["size"] for row in full["files"]))
    (folder / MANIFEST).write_text(json.dumps(full, indent=2, sort_keys=False) + "\n")
    return full


def read_manifest(path: Path | str) -> dict | None:
    """The manifest of an artifact folder, or None for a folder without one (a plain HF model)."""
    path = Path(path)
    file = path / MANIFEST if path.is_dir() else path.parent / MANIFEST
    if not file.is_file():
        return None
    return read_json(file)


def verify(folder: Path) -> None:
    """Check every file listed in the manifest against its size and sha256."""
    manifest = read_manifest(folder)
    if manifest is None:
        raise InputError(f"{folder} has no {MANIFEST}", hint="is it a quantkit artifact?")
    for row in manifest.get("files", []):
        path = folder / row["path"]
        if not path.is_file():
            raise IntegrityError(f"{row['path']} is missing from {folder}")
        if path.stat().st_size != row["size"] or sha256_file(path) != row["sha256"]:
            raise IntegrityError(f"{row['path']} does not match its sha256 in {MANIFEST}")


def bits_per_weight(size_bytes: int, n_params: int | None) -> float | None:
    """Effective bits per weight of the whole artifact (everything on disk counted)."""
    if not n_params:
        return None
    return round(size_bytes * 8 / n_params, 3)
