"""The ModelScope side of ``quantkit.hub.download.download``: list a revision with its HubApi, fetch with
modelscope's ``snapshot_download`` pinned to the resolved commit, map its exceptions.

modelscope 1.40 is a shim over the ``modelscope_hub`` package; quantkit calls that directly
because ``import modelscope`` imports torch."""

import contextlib
import re
from pathlib import Path

from quantkit.core.errors import DownloadError, IntegrityError
from quantkit.hub.listing import HubUnreachable, Listing, RemoteFile, unlink_fetched

NAME = "modelscope"
DEFAULT_REVISION = "master"
DEFAULT_ENDPOINT = "https://www.modelscope.cn"
TOKEN_ENV = "MODELSCOPE_API_TOKEN"
ENDPOINT_ENV = "MODELSCOPE_ENDPOINT"
CHECKS_SHA256 = True  # modelscope verifies each file's Sha256 itself (quantkit checks again)
COMMIT_LIKE = re.compile(r"[0-9a-f]{7,64}")


def _api(token: str | None, endpoint: str):
    from modelscope_hub.api import HubApi

    return HubApi(endpoint=endpoint, token=token)


def listing(repo_id: str, revision: str, token: str | None, endpoint: str) -> Listing:
    api = _api(token, endpoint)
    with errors_mapped(repo_id, revision, endpoint, stage="repo"):
        branches, tags = api.legacy.list_revisions_detail(repo_id, "model")
    known = {item.get("Revision") for item in branches + tags}
    if revision not in known and not COMMIT_LIKE.fullmatch(revision):
        raise revision_error(repo_id, revision)
    with errors_mapped(repo_id, revision, endpoint, stage="revision"):
        raw = api.legacy.list_repo_files(repo_id, "model", revision=revision, recursive=True)
    blobs = [f for f in raw if (f.get("Type") or "blob") == "blob"]
    # Each entry names the commit that last touched it; the newest one is the snapshot's commit.
    newest = max(blobs, key=lambda f: f.get("CommittedDate") or 0, default={})
    commit = newest.get("Revision") or (revision if COMMIT_LIKE.fullmatch(revision) else None)
    if commit is None:
        raise DownloadError(
            f"ModelScope did not say which commit {repo_id}@{revision} is", hint="pass `revision` with a commit id"
        )
    files = [
        RemoteFile(name=f.get("Path") or f.get("Name"), size=int(f.get("Size") or 0), sha256=(f.get("Sha256") or None))
        for f in blobs
    ]
    return Listing(commit=commit, files=files)


def cache_folder(repo_id: str, commit: str) -> Path:
    """Where snapshot_download puts a commit with no --local-dir (it names the folder after the
    revision string it was given, which quantkit makes the commit)."""
    from modelscope_hub.config import get_default_config  # MODELSCOPE_CACHE or ~/.cache/modelscope

    return Path(get_default_config().cache_dir) / "models" / repo_id.replace("/", "--") / "snapshots" / commit


def fetch(
    repo_id: str, commit: str, names: list[str], local_dir: Path | None, token: str | None, endpoint: str, progress: bool
) -> Path:
    try:  # what modelscope.snapshot_download delegates to, without `import modelscope` (4 s, torch)
        from modelscope_hub.compat.snapshot_download import snapshot_download
    except ImportError:
        from modelscope import snapshot_download

    with errors_mapped(repo_id, commit, endpoint, stage="fetch"):
        path = snapshot_download(
            repo_id,
            revision=commit,
            allow_patterns=names,
            token=token,
            endpoint=endpoint,
            local_dir=str(local_dir) if local_dir else None,
        )
    return Path(path)


def remove(folder: Path, name: str) -> None:
    unlink_fetched(folder / name)


def revision_error(repo_id: str, revision: str) -> DownloadError:
    return DownloadError(f"revision {revision!r} not found in {repo_id}", hint="give a branch, tag or commit that the repo has")


@contextlib.contextmanager
def errors_mapped(repo_id: str, revision: str, endpoint: str, stage: str):
    import requests
    from modelscope_hub import errors as ms

    try:
        yield
    except ms.FileDownloadError as exc:  # its own sha256 check failing ends up wrapped in this
        if isinstance(exc.__cause__, ms.FileIntegrityError) or "Hash mismatch" in str(exc):
            raise IntegrityError(
                f"checksum mismatch while downloading {repo_id}: {one_line(exc)}",
                hint="the damaged file was not kept; run again to refetch it",
            ) from exc
        raise interrupted(repo_id, exc) from exc
    except ms.FileIntegrityError as exc:
        raise IntegrityError(
            f"checksum mismatch while downloading {repo_id}: {one_line(exc)}",
            hint="the damaged file was not kept; run again to refetch it",
        ) from exc
    except (ms.AuthenticationError, ms.PermissionDeniedError) as exc:
        raise auth_error(repo_id, endpoint) from exc
    except ms.NotExistError as exc:
        raise not_found(repo_id, revision, endpoint, stage) from exc
    except requests.HTTPError as exc:  # the compat snapshot_download re-raises API errors as this
        status = getattr(exc.response, "status_code", None) or _status_in(str(exc))
        if status in (401, 403):
            raise auth_error(repo_id, endpoint) from exc
        if status == 404:
            raise not_found(repo_id, revision, endpoint, stage) from exc
        raise DownloadError(f"{endpoint} answered HTTP {status} for {repo_id}") from exc
    except (ms.NetworkError, requests.ConnectionError, ConnectionError) as exc:
        if stage == "repo":
            raise HubUnreachable(
                f"cannot reach {endpoint}", hint="check the network, or use `endpoint` / MODELSCOPE_ENDPOINT"
            ) from exc
        raise interrupted(repo_id, exc) from exc
    except (ms.HubError, requests.RequestException, OSError) as exc:
        raise interrupted(repo_id, exc) from exc


def one_line(exc: Exception) -> str:
    """modelscope lists each failed file on a line of its own: keep the error to one line."""
    return " ".join(str(exc).split())


def _status_in(text: str) -> int | None:
    found = re.search(r"\[(\d{3})\]", text)
    return int(found.group(1)) if found else None


def not_found(repo_id: str, revision: str, endpoint: str, stage: str) -> DownloadError:
    if stage == "repo":
        return DownloadError(
            f"repository {repo_id} not found on {endpoint}",
            hint="check the id; a private repo needs `token` or MODELSCOPE_API_TOKEN",
        )
    return revision_error(repo_id, revision)


def auth_error(repo_id: str, endpoint: str) -> DownloadError:
    return DownloadError(f"{repo_id} on {endpoint} needs authentication", hint="pass `token` or set MODELSCOPE_API_TOKEN")


def interrupted(repo_id: str, exc: Exception) -> DownloadError:
    return DownloadError(
        f"the transfer of {repo_id} was interrupted: {type(exc).__name__}",
        hint="run the same command again to finish; completed files are reused",
    )
