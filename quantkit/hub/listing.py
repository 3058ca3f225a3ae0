"""What a hub client (quantkit.hub.hf, quantkit.hub.modelscope) hands back to ``download``: the
listing of a revision, and the records of verified files."""

from dataclasses import dataclass
from pathlib import Path

from quantkit.core.errors import DownloadError


class HubUnreachable(DownloadError):
    """The hub did not answer at all (offline, wrong endpoint): an earlier download may still do."""


@dataclass
class RemoteFile:
    """One file as the hub lists it (``sha256`` for LFS / ModelScope, ``git_sha1`` for small HF files)."""

    name: str
    size: int
    sha256: str | None = None
    git_sha1: str | None = None


@dataclass
class Listing:
    commit: str
    files: list[RemoteFile]


@dataclass
class FileRecord:
    name: str
    size: int
    sha256: str | None


def unlink_fetched(path: Path) -> None:
    """Remove a fetched file; for a cache link, its blob too, so a rerun fetches it again."""
    if path.is_symlink():
        path.resolve().unlink(missing_ok=True)
    path.unlink(missing_ok=True)
