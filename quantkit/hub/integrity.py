"""Checking downloaded files against the hub's listing and against an earlier verified run:
sha256 (or the git blob id HF gives small files) in one read, and which files a rerun may trust."""

import contextlib
import hashlib
from pathlib import Path

from quantkit.core import events
from quantkit.core.atomic import read_json
from quantkit.core.errors import DownloadError, IntegrityError
from quantkit.core.manifest import SOURCE_MANIFEST
from quantkit.hub.listing import FileRecord, RemoteFile


def verify(hub, folder: Path, files: list[RemoteFile], previous: dict) -> list[FileRecord]:
    """Hash every fetched file against the listing; a bad file is removed so a rerun refetches it."""
    records = []
    for remote in files:
        path = folder / remote.name
        if not path.is_file():
            raise DownloadError(f"{remote.name} is missing after the download", hint="run the same command again to finish it")
        size = path.stat().st_size
        known = previous.get(remote.name)
        if known and known["size"] == size and known.get("sha256") and remote.sha256 in (None, known["sha256"]):
            records.append(FileRecord(remote.name, size, known["sha256"]))  # hashed by an earlier run
            continue
        sha256, git_sha1 = file_digests(path)
        expected = remote.sha256 or remote.git_sha1
        actual = sha256 if remote.sha256 else git_sha1
        if size != remote.size or (expected and actual != expected):
            hub.remove(folder, remote.name)
            raise IntegrityError(
                f"checksum mismatch for {remote.name}: expected {remote.size} bytes {expected or ''}, got {size} bytes {actual}",
                hint="the file was removed; run again to fetch it anew",
            )
        records.append(FileRecord(remote.name, size, sha256))
    return records


def file_digests(path: Path, chunk: int = 1 << 20) -> tuple[str, str]:
    """sha256 and the git blob sha1 (the id the HF tree gives small files), in one read."""
    sha256 = hashlib.sha256()
    git = hashlib.sha1(b"blob %d\0" % path.stat().st_size)
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            sha256.update(block)
            git.update(block)
    return sha256.hexdigest(), git.hexdigest()


def previous_records(folder: Path, commit: str) -> dict[str, dict]:
    """Files an earlier verified run recorded for this commit and that have not changed since."""
    manifest = folder / SOURCE_MANIFEST
    with contextlib.suppress(OSError, ValueError):
        data = read_json(manifest)
        if data.get("commit") == commit:
            written = manifest.stat().st_mtime
            return {
                row["path"]: row
                for row in data.get("files", [])
                if (folder / row["path"]).is_file()
                and (folder / row["path"]).stat().st_size == row["size"]
                and same_mtime(folder / row["path"], row, written)
            }
    return {}


def drop_tampered(hub, folder: Path, files: list[RemoteFile], previous: dict) -> None:
    """Before fetching: a file already in ``folder`` that changed since a verified run and no longer
    matches the listing is removed, so the client fetches it anew instead of keeping it (clients
    trust what they find: huggingface_hub's cache by name, its --local-dir by a 1-second mtime)."""
    for remote in files:
        path = folder / remote.name
        if remote.name in previous or not path.is_file() or not (remote.sha256 or remote.git_sha1):
            continue
        sha256, git_sha1 = file_digests(path)
        if (sha256 if remote.sha256 else git_sha1) != (remote.sha256 or remote.git_sha1) or path.stat().st_size != remote.size:
            events.logger(__name__).info(f"{remote.name} does not match the hub's checksum; fetching it again")
            hub.remove(folder, remote.name)
        else:  # intact: hashed once here, not again after the fetch
            previous[remote.name] = {"path": remote.name, "size": remote.size, "sha256": sha256}


def unchanged_since_verified(folder: Path, data: dict) -> None:
    """Refuse a verified download whose files changed since: each must still have its recorded
    size, and its recorded mtime or else its recorded sha256 (a changed file is hashed again)."""
    manifest_mtime = (folder / SOURCE_MANIFEST).stat().st_mtime
    for row in data.get("files", []):
        path = folder / row["path"]
        if not path.is_file():
            raise IntegrityError(
                f"{row['path']} is missing from the verified download in {folder}",
                hint="reconnect to the hub and run the same command to fetch it again",
            )
        if path.stat().st_size == row["size"] and same_mtime(path, row, manifest_mtime):
            continue
        if path.stat().st_size != row["size"] or file_digests(path)[0] != row.get("sha256"):
            raise IntegrityError(
                f"{row['path']} in {folder} changed after it was downloaded and verified",
                hint="reconnect to the hub and run the same command to fetch it again",
            )


def same_mtime(path: Path, row: dict, manifest_mtime: float) -> bool:
    """The file's modification time is the one recorded when it was verified (manifests written
    before quantkit recorded it: not modified after the manifest was written)."""
    if "mtime_ns" in row:
        return path.stat().st_mtime_ns == row["mtime_ns"]
    return path.stat().st_mtime <= manifest_mtime
