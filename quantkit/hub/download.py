"""``download()``: a checkpoint from the Hugging Face Hub or ModelScope, verified and recorded.

The real clients do the transfer (``hub_hf`` / ``hub_modelscope``); this module decides what to
fetch and checks the result: list the revision and pin its commit, filter by patterns, refuse
unsafe names and pickle-only weights, fetch ``config.json`` first to describe the model and check
disk room, fetch the rest, hash every file against the listing, and write ``quantkit-source.json``.
"""

import contextlib
import glob
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import import_module
from pathlib import Path, PurePosixPath

from quantkit.core.atomic import read_json, write_json
from quantkit.core.errors import DownloadError, InputError, PreflightError
from quantkit.core.manifest import SOURCE_MANIFEST, now_iso
from quantkit.core.modelinfo import REPO_ID, ModelInfo, human_size
from quantkit.hub.integrity import drop_tampered, previous_records, unchanged_since_verified, verify
from quantkit.hub.listing import FileRecord, HubUnreachable, RemoteFile

SOURCES = {"hf": "quantkit.hub.hf", "modelscope": "quantkit.hub.modelscope"}
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
SAFE_WEIGHT_SUFFIXES = (".safetensors", ".gguf")
PREFLIGHT_FILES = ("config.json", "tokenizer_config.json")


@dataclass
class DownloadResult:
    path: Path
    files: list[FileRecord]
    total_bytes: int
    commit: str | None
    info: ModelInfo | None
    source: str = "hf"
    repo_id: str = ""
    revision: str | None = None
    dry_run: bool = False
    offline: bool = False  # the hub was unreachable; this is a verified earlier download
    skipped_pickle: list[str] = field(default_factory=list)


@contextlib.contextmanager
def env_set(name: str, value: str):
    """Set an environment variable for the duration of a block, then restore it."""
    old = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old


def download(
    repo_id: str,
    *,
    source: str = "hf",
    revision: str | None = None,
    include: list[str] | None = None,
    exclude: list[str] | None = None,
    local_dir: str | Path | None = None,
    token: str | None = None,
    endpoint: str | None = None,
    dry_run: bool = False,
    allow_pickle: bool = False,
    progress: bool = True,
    on_preflight: Callable[[DownloadResult], None] | None = None,
) -> DownloadResult:
    """Fetch ``repo_id`` at ``revision`` (default: main on HF, master on ModelScope), verified.

    ``on_preflight`` is called once the listing and ``config.json`` are known and before any
    weight is fetched (the CLI prints the model table there). ``dry_run`` fetches nothing but
    ``config.json`` into a temporary folder."""
    from quantkit.hub.bundled import is_bundled

    if is_bundled(repo_id):
        return _bundled(repo_id, on_preflight)
    if source not in SOURCES:
        raise InputError(f"unknown source {source!r}", hint=f"choose one of {', '.join(SOURCES)}")
    if not REPO_ID.fullmatch(repo_id) or ".." in repo_id:
        raise InputError(
            f"{repo_id!r} is not a hub repo id", hint="expected owner/name, e.g. HuggingFaceTB/SmolLM2-135M-Instruct"
        )
    hub = import_module(SOURCES[source])
    token = token or os.environ.get(hub.TOKEN_ENV) or None
    endpoint = (endpoint or os.environ.get(hub.ENDPOINT_ENV) or hub.DEFAULT_ENDPOINT).rstrip("/")
    revision = revision or hub.DEFAULT_REVISION
    # huggingface_hub reads HF_ENDPOINT at import and a background call may ignore endpoint=:
    # set the variable too while downloading.
    with env_set(hub.ENDPOINT_ENV, endpoint):
        try:
            listing = hub.listing(repo_id, revision, token, endpoint)
        except HubUnreachable:
            earlier = None if dry_run else offline_copy(hub, repo_id, source, revision, local_dir)
            if earlier is None:
                raise
            return earlier
        for remote in listing.files:
            check_name(remote.name)
        selected, skipped = select(listing.files, include, exclude, allow_pickle, f"{repo_id}@{revision}")
        dest = Path(local_dir).expanduser().resolve() if local_dir else hub.cache_folder(repo_id, listing.commit)
        result = DownloadResult(
            path=dest,
            files=[FileRecord(f.name, f.size, f.sha256) for f in selected],
            total_bytes=sum(f.size for f in selected),
            commit=listing.commit,
            info=None,
            source=source,
            repo_id=repo_id,
            revision=revision,
            dry_run=dry_run,
            skipped_pickle=skipped,
        )
        first = [f for f in selected if f.name in PREFLIGHT_FILES]
        if dry_run:
            with tempfile.TemporaryDirectory(prefix="quantkit-dry-run-") as scratch:
                result.info = _describe(hub, repo_id, listing.commit, first, Path(scratch), token, endpoint)
            if on_preflight:
                on_preflight(result)
            return result
        check_disk(dest, selected)
        previous = previous_records(dest, listing.commit)
        drop_tampered(hub, dest, selected, previous)
        # The manifest marks a verified folder: gone until this run has verified everything.
        (dest / SOURCE_MANIFEST).unlink(missing_ok=True)
        result.info = _describe(hub, repo_id, listing.commit, first, local_dir and dest, token, endpoint, previous)
        if on_preflight:
            on_preflight(result)
        folder = hub.fetch(
            repo_id, listing.commit, [glob.escape(f.name) for f in selected], local_dir and dest, token, endpoint, progress
        )
    result.path = folder
    result.files = verify(hub, folder, selected, previous)
    for stale in folder.rglob("*.incomplete"):  # left by an earlier failed run, now superseded
        stale.unlink(missing_ok=True)
    write_source_manifest(result, endpoint)
    return result


def offline_copy(hub, repo_id: str, source: str, revision: str, local_dir) -> DownloadResult | None:
    """With the hub unreachable, a verified earlier download of the same revision is the answer
    (as huggingface_hub does from its cache). Its manifest proves it complete."""
    if local_dir:
        candidates = [Path(local_dir).expanduser().resolve()]
    else:
        candidates = sorted(hub.cache_folder(repo_id, "x").parent.glob("*"))
    found = []
    for folder in candidates:
        with contextlib.suppress(OSError, ValueError):
            data = read_json(folder / SOURCE_MANIFEST)
            if (data.get("source"), data.get("repo_id")) == (source, repo_id) and revision in (
                data.get("revision"),
                data.get("commit"),
            ):
                found.append((data.get("downloaded_at", ""), folder, data))
    if not found:
        return None
    from quantkit.core.modelinfo import describe

    _, folder, data = max(found)
    unchanged_since_verified(folder, data)
    files = [FileRecord(row["path"], row["size"], row.get("sha256")) for row in data["files"]]
    info = describe(folder) if (folder / "config.json").is_file() else None
    return DownloadResult(
        path=folder,
        files=files,
        total_bytes=data.get("total_bytes", 0),
        commit=data.get("commit"),
        info=info,
        source=source,
        repo_id=repo_id,
        revision=revision,
        offline=True,
        skipped_pickle=data.get("skipped_pickle", []),
    )


def _bundled(spec: str, on_preflight) -> DownloadResult:
    from quantkit.core.modelinfo import describe
    from quantkit.hub.bundled import materialize

    path = materialize(spec)
    files = [FileRecord(p.name, p.stat().st_size, None) for p in sorted(path.iterdir()) if p.is_file()]
    result = DownloadResult(
        path=path,
        files=files,
        total_bytes=sum(f.size for f in files),
        commit=None,
        info=describe(path),
        source="bundled",
        repo_id=spec,
    )
    if on_preflight:
        on_preflight(result)
    return result


def check_name(name: str) -> None:
    """Listed names become paths under the target folder: refuse any that could leave it."""
    parts = PurePosixPath(name).parts
    if (
        not name
        or "\\" in name
        or "\0" in name
        or name.startswith("/")
        or ".." in parts
        or re.match(r"[A-Za-z]:", name)
        or name != str(PurePosixPath(name))
    ):
        raise DownloadError(
            f"the hub listed an unsafe file name {name!r}; nothing was downloaded", hint="this repo cannot be fetched safely"
        )


def select(files: list[RemoteFile], include, exclude, allow_pickle: bool, where: str):
    """The files matching the patterns, minus pickle weights unless allowed (and our manifest)."""
    from huggingface_hub.utils import filter_repo_objects  # the same glob rules as `hf download`

    chosen = list(
        filter_repo_objects(
            files,
            allow_patterns=list(include) if include else None,
            ignore_patterns=list(exclude) if exclude else None,
            key=lambda f: f.name,
        )
    )
    chosen = [f for f in chosen if f.name != SOURCE_MANIFEST]
    if not chosen:
        raise InputError(
            f"no file of {where} matches the `include`/`exclude` patterns",
            hint=f"it has: {', '.join(f.name for f in files[:8])}{' ...' if len(files) > 8 else ''}",
        )
    if allow_pickle:
        return chosen, []
    pickles = [f.name for f in chosen if f.name.endswith(PICKLE_SUFFIXES)]
    safe = [f for f in chosen if f.name.endswith(SAFE_WEIGHT_SUFFIXES)]
    if pickles and not safe:
        raise PreflightError(
            f"{where} has weights only as pickle files ({', '.join(pickles[:3])}), which can run code when loaded",
            hint="pass `allow_pickle` if you trust this repo",
        )
    return [f for f in chosen if f.name not in pickles], pickles


def check_disk(dest: Path, files: list[RemoteFile]) -> None:
    needed = sum(f.size for f in files if not _same_size(dest / f.name, f.size))
    probe = dest
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if needed > free:
        raise PreflightError(
            f"not enough disk space in {probe}: the download needs {human_size(needed)}, {human_size(free)} is free",
            hint="free some space or pass a `local_dir` on a larger disk",
        )


def _same_size(path: Path, size: int) -> bool:
    return path.is_file() and path.stat().st_size == size


def _describe(hub, repo_id, commit, first, where, token, endpoint, previous=None) -> ModelInfo | None:
    """Fetch config.json (+ tokenizer config) before the weights and describe the model."""
    from quantkit.core.modelinfo import describe

    if not any(f.name == "config.json" for f in first):
        return None
    folder = hub.fetch(repo_id, commit, [glob.escape(f.name) for f in first], where, token, endpoint, False)
    verify(hub, folder, first, previous or {})
    try:
        config = read_json(folder / "config.json")
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DownloadError(f"config.json of {repo_id} is not valid JSON: {exc}") from exc
    return describe(config=config)


def write_source_manifest(result: DownloadResult, endpoint: str) -> None:
    """Record where the files came from; written last, so its presence means a verified download."""
    manifest = {
        "source": result.source,
        "repo_id": result.repo_id,
        "endpoint": endpoint,
        "revision": result.revision,
        "commit": result.commit,
        "files": [
            {"path": f.name, "size": f.size, "sha256": f.sha256, "mtime_ns": (result.path / f.name).stat().st_mtime_ns}
            for f in result.files
        ],
        "total_bytes": result.total_bytes,
        "skipped_pickle": result.skipped_pickle,
        "downloaded_at": now_iso(),
    }
    target = result.path / SOURCE_MANIFEST
    write_json(target, manifest)
