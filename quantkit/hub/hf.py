"""The Hugging Face Hub side of ``quantkit.hub.download.download``: list a revision, fetch files with
``huggingface_hub.snapshot_download``, and turn its exceptions into quantkit errors."""

import contextlib
from pathlib import Path

from quantkit.core.errors import DownloadError
from quantkit.hub.listing import HubUnreachable, Listing, RemoteFile, unlink_fetched

NAME = "hf"
DEFAULT_REVISION = "main"
DEFAULT_ENDPOINT = "https://huggingface.co"
TOKEN_ENV = "HF_TOKEN"
ENDPOINT_ENV = "HF_ENDPOINT"
CHECKS_SHA256 = False  # huggingface_hub compares sizes only; quantkit hashes every file


def listing(repo_id: str, revision: str, token: str | None, endpoint: str) -> Listing:
    from huggingface_hub import HfApi
    from huggingface_hub.hf_api import RepoFile

    api = HfApi(endpoint=endpoint, token=token)
    with errors_mapped(repo_id, revision, endpoint, stage="list"):
        commit = api.repo_info(repo_id, revision=revision).sha
        entries = [e for e in api.list_repo_tree(repo_id, revision=commit, recursive=True) if isinstance(e, RepoFile)]
    files = [
        RemoteFile(
            name=e.path,
            size=e.size,
            sha256=e.lfs.sha256 if e.lfs is not None else None,
            git_sha1=None if e.lfs is not None else e.blob_id,
        )
        for e in entries
    ]
    return Listing(commit=commit, files=files)


def cache_folder(repo_id: str, commit: str) -> Path:
    """Where snapshot_download puts this commit when no --local-dir is given."""
    from huggingface_hub import constants
    from huggingface_hub.file_download import repo_folder_name

    return Path(constants.HF_HUB_CACHE) / repo_folder_name(repo_id=repo_id, repo_type="model") / "snapshots" / commit


def fetch(
    repo_id: str, commit: str, names: list[str], local_dir: Path | None, token: str | None, endpoint: str, progress: bool
) -> Path:
    from huggingface_hub import snapshot_download

    clean_incomplete(repo_id, local_dir)
    try:
        with errors_mapped(repo_id, commit, endpoint, stage="fetch"), progress_bars(progress):
            path = snapshot_download(
                repo_id,
                revision=commit,
                allow_patterns=names,
                endpoint=endpoint,
                token=token,
                local_dir=str(local_dir) if local_dir else None,
            )
    except BaseException:
        # huggingface_hub does not resume a partial file in a new process: drop what it left.
        clean_incomplete(repo_id, local_dir)
        raise
    return Path(path)


def remove(folder: Path, name: str) -> None:
    """Remove a bad file so that a rerun fetches it again (in the cache: the link and its blob)."""
    unlink_fetched(folder / name)
    (folder / ".cache" / "huggingface" / "download" / f"{name}.metadata").unlink(missing_ok=True)


def clean_incomplete(repo_id: str, local_dir: Path | None) -> None:
    if local_dir is not None:
        where = Path(local_dir) / ".cache" / "huggingface" / "download"
    else:
        where = cache_folder(repo_id, "x").parent.parent / "blobs"
    if where.is_dir():
        for stale in where.rglob("*.incomplete"):
            stale.unlink(missing_ok=True)


@contextlib.contextmanager
def progress_bars(enabled: bool):
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    was_disabled = are_progress_bars_disabled()
    if not enabled:
        disable_progress_bars()
    try:
        yield
    finally:
        if not enabled and not was_disabled:
            enable_progress_bars()


@contextlib.contextmanager
def errors_mapped(repo_id: str, revision: str, endpoint: str, stage: str):
    """One clear DownloadError for each way the hub can fail."""
    import httpx
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        yield
    except GatedRepoError as exc:
        raise auth_error(repo_id, endpoint) from exc
    except RepositoryNotFoundError as exc:  # the real hub also says this for private repos
        raise DownloadError(
            f"repository {repo_id} not found on {endpoint}", hint="check the id; a private repo needs `token` or HF_TOKEN"
        ) from exc
    except RevisionNotFoundError as exc:
        raise DownloadError(
            f"revision {revision!r} not found in {repo_id}", hint="give a branch, tag or commit that the repo has"
        ) from exc
    except LocalEntryNotFoundError as exc:  # what snapshot_download says when the hub is unreachable
        raise unreachable(endpoint) from exc
    except EntryNotFoundError as exc:
        raise DownloadError(f"a listed file of {repo_id} is missing on the server: {exc}") from exc
    except HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else None
        if status in (401, 403):
            raise auth_error(repo_id, endpoint) from exc
        raise DownloadError(
            f"{endpoint} answered HTTP {status} for {repo_id}", hint="retry later or try another `endpoint`"
        ) from exc
    except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
        if stage == "list":
            raise unreachable(endpoint) from exc
        raise interrupted(repo_id) from exc
    except (httpx.TransportError, OSError) as exc:
        # Dropped connections, short reads and huggingface_hub's size "consistency check".
        raise interrupted(repo_id, exc) from exc


def auth_error(repo_id: str, endpoint: str) -> DownloadError:
    return DownloadError(
        f"{repo_id} on {endpoint} needs authentication (gated or private)",
        hint="accept its terms on the hub, then pass `token` or set HF_TOKEN",
    )


def unreachable(endpoint: str) -> DownloadError:
    return HubUnreachable(f"cannot reach {endpoint}", hint="check the network, or use a mirror with `endpoint` / HF_ENDPOINT")


def interrupted(repo_id: str, exc: Exception | None = None) -> DownloadError:
    detail = f": {type(exc).__name__}" if exc is not None else ""
    return DownloadError(
        f"the transfer of {repo_id} was interrupted{detail}",
        hint="run the same command again to finish; completed files are reused",
    )
