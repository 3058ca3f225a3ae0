"""The artifact folder's manifest (``quantkit.json``) and model card (``README.md``).

Every artifact - whatever the method - carries the same manifest: what it is, what it was made
from, how, with which library versions, and the sha256 of each file. Engines are chosen from it.
"""

import datetime as _dt
import hashlib
import json
from importlib import metadata
from pathlib import Path

from quantkit import __version__
from quantkit.errors import InputError, IntegrityError

MANIFEST = "quantkit.json"
SOURCE_MANIFEST = "quantkit-source.json"  # written next to downloaded or bundled checkpoints
CARD = "README.md"
SCHEMA = 1
RESULTS_BEGIN = "<!-- quantkit:results:begin -->"
RESULTS_END = "<!-- quantkit:results:end -->"


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def file_table(folder: Path, skip: tuple[str, ...] = (MANIFEST, CARD)) -> list[dict]:
    """Path, size and sha256 of every file below ``folder`` (sorted; manifest and card left out
    because they are written after the table and change when results are filled in)."""
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
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


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
    try:
        return json.loads(file.read_text())
    except json.JSONDecodeError as exc:
        raise InputError(f"{file} is not valid JSON: {exc}") from exc


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


def write_model_card(folder: Path, manifest: dict, usage: str, results: str = "", title: str | None = None) -> None:
    """A model card in the Hub's format: YAML header, how to load it, and a results section
    between markers that ``quantkit report`` fills in later."""
    source = manifest.get("source", {})
    base = source.get("repo_id") or source.get("model") or "unknown"
    method = manifest.get("method", "unknown")
    tags = ["quantkit", "quantized", method, *manifest.get("tags", [])]
    header = [
        "---",
        f"base_model: {base}",
        f"library_name: {manifest.get('library_name', 'transformers')}",
        "tags:",
        *[f"- {tag}" for tag in dict.fromkeys(tags)],
        "quantized_by: quantkit",
        "---",
    ]
    settings = "\n".join(f"- `{k}`: `{v}`" for k, v in manifest.get("settings", {}).items())
    body = f"""
# {title or folder.name}

{method.upper()} quantization of [{base}](https://huggingface.co/{base}) made with
[quantkit](https://github.com/quantkit/quantkit) {manifest.get('quantkit_version', __version__)}.

## Settings

{settings or '- defaults'}

## Use it

{usage.strip()}

## Results

{RESULTS_BEGIN}
{results.strip() or 'Not benchmarked yet: run `quantkit bench` on this folder.'}
{RESULTS_END}
"""
    (folder / CARD).write_text("\n".join(header) + "\n" + body)


def fill_card_results(folder: Path, results_markdown: str) -> None:
    """Replace the results section of an existing model card."""
    card = folder / CARD
    text = card.read_text()
    start, end = text.find(RESULTS_BEGIN), text.find(RESULTS_END)
    if start < 0 or end < 0:
        text += f"\n## Results\n\n{RESULTS_BEGIN}\n{results_markdown.strip()}\n{RESULTS_END}\n"
    else:
        text = text[: start + len(RESULTS_BEGIN)] + "\n" + results_markdown.strip() + "\n" + text[end:]
    card.write_text(text)
