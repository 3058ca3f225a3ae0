"""``push()``: publish a verified, validated artifact to the Hugging Face Hub or ModelScope.

What is sent is decided first, before anything leaves the machine (``quantkit.hub.push_plan``).
The real clients upload: huggingface_hub's ``create_commit`` (the Hub deduplicates what an
interrupted run already sent: LFS objects / xet chunks, so a rerun resumes) and modelscope's
resumable ``upload_folder``; their errors become one actionable message each.
"""

import contextlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from quantkit.core.errors import InputError, PushAuthError, PushError, QuotaExceeded
from quantkit.core.manifest import CARD, MANIFEST, RESULTS_FILE, read_manifest
from quantkit.hub.push_plan import DEFAULT_ENDPOINT, DEFAULT_REVISION, ENDPOINT_ENV, SOURCES, TOKEN_ENV, PushPlan, plan_push


@dataclass
class PushResult:
    plan: PushPlan
    url: str | None = None
    commit: str | None = None
    dry_run: bool = False


def push(
    artifact: str | Path,
    repo_id: str,
    *,
    source: str = "hf",
    private: bool = False,
    revision: str | None = None,
    token: str | None = None,
    endpoint: str | None = None,
    dry_run: bool = False,
    allow_failed: bool = False,
    allow_unvalidated: bool = False,
) -> PushResult:
    """Publish ``artifact`` to ``repo_id`` (created when missing, private if asked).

    Token and endpoint default to the same variables as ``download``: HF_TOKEN / HF_ENDPOINT,
    MODELSCOPE_API_TOKEN / MODELSCOPE_ENDPOINT. Run it again after an interruption: what the hub
    already holds is not sent again. An artifact that failed its gates is refused unless
    ``allow_failed``; an unvalidated one (never benchmarked, no base, quality or smoke skipped)
    unless ``allow_unvalidated`` (or ``allow_failed``); either is then said in its card."""
    if source not in SOURCES:
        raise InputError(f"unknown source {source!r}", hint=f"choose one of {', '.join(SOURCES)}")
    token = token or os.environ.get(TOKEN_ENV[source]) or None
    plan = plan_push(artifact, repo_id, source, revision, allow_failed, token, allow_unvalidated)
    if dry_run:
        return PushResult(plan, dry_run=True)
    endpoint = (endpoint or os.environ.get(ENDPOINT_ENV[source]) or DEFAULT_ENDPOINT[source]).rstrip("/")
    from quantkit.hub.download import env_set

    with env_set(ENDPOINT_ENV[source], endpoint):  # huggingface_hub reads it at import and in helpers
        if source == "hf":
            commit, url = upload_hf(plan, token, endpoint, private)
        else:
            commit, url = upload_modelscope(plan, token, endpoint, private)
    return PushResult(plan, url=url, commit=commit)


# --- Hugging Face -------------------------------------------------------------------------------


def upload_hf(plan: PushPlan, token: str | None, endpoint: str, private: bool) -> tuple[str | None, str]:
    from huggingface_hub import CommitOperationAdd, HfApi

    api = HfApi(endpoint=endpoint, token=token)
    with hf_errors(plan.repo_id, endpoint):
        api.create_repo(plan.repo_id, repo_type="model", private=private, exist_ok=True)
        if plan.revision != DEFAULT_REVISION["hf"]:
            api.create_branch(plan.repo_id, branch=plan.revision, exist_ok=True)
        operations = [
            CommitOperationAdd(path_in_repo=f.path, path_or_fileobj=str(f.local) if f.local else f.data) for f in plan.files
        ]
        info = api.create_commit(
            plan.repo_id,
            operations,
            commit_message=plan.commit_message,
            commit_description=f"Published with `quantkit push` ({len(plan.files)} files).",
            revision=plan.revision,
        )
    return info.oid, f"{endpoint}/{plan.repo_id}"


class hf_errors:
    """One typed error for each way the Hub refuses an upload."""

    def __init__(self, repo_id: str, endpoint: str):
        self.repo_id, self.endpoint = repo_id, endpoint

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb):
        if exc is None:
            return False
        import httpx
        from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError

        if isinstance(exc, HfHubHTTPError):
            status = exc.response.status_code if exc.response is not None else None
            text = f"{exc.server_message or ''} {exc}".lower()
            if "quota" in text or status == 413 or "storage limit" in text:
                raise quota_error(self.repo_id, self.endpoint) from exc
            if (
                status == 401
                and not isinstance(exc, RepositoryNotFoundError)
                or "invalid credentials" in text
                or "invalid user token" in text
            ):
                raise token_error(self.endpoint, "hf") from exc
            if status in (401, 403) or isinstance(exc, RepositoryNotFoundError):
                raise rights_error(self.repo_id, self.endpoint, "hf") from exc
            raise PushError(
                f"{self.endpoint} answered HTTP {status} while pushing {self.repo_id}",
                hint="run the same command again; what was sent is kept",
            ) from exc
        if isinstance(exc, (httpx.TransportError, OSError, RuntimeError)):
            raise interrupted(self.repo_id, exc) from exc
        if isinstance(exc, ValueError) and "lfs" in str(exc).lower():
            raise PushError(f"the hub refused a file of {self.repo_id}: {str(exc).splitlines()[-1]}") from exc
        return False


def token_error(endpoint: str, source: str) -> PushAuthError:
    return PushAuthError(
        f"{endpoint} rejected the access token", hint=f"pass a valid write token as `token` or set {TOKEN_ENV[source]}"
    )


def rights_error(repo_id: str, endpoint: str, source: str) -> PushError:
    return PushError(
        f"cannot write to {repo_id} on {endpoint}: the repo is missing and this token may not create it, or may not write to it",
        hint=f"create the repo on the hub, or use a token with write access to {repo_id.split('/')[0]} ({TOKEN_ENV[source]})",
    )


def quota_error(repo_id: str, endpoint: str) -> QuotaExceeded:
    return QuotaExceeded(
        f"{endpoint} refused {repo_id}: the storage quota is full",
        hint="free space on the account or publish to another namespace; rerun to resume",
    )


def interrupted(repo_id: str, exc: BaseException) -> PushError:
    cause = exc.__cause__ or exc
    return PushError(
        f"the upload to {repo_id} was interrupted: {type(cause).__name__}",
        hint="run the same command again; files the hub already has are not sent again",
    )


# --- ModelScope ---------------------------------------------------------------------------------


def upload_modelscope(plan: PushPlan, token: str | None, endpoint: str, private: bool) -> tuple[str | None, str]:
    """modelscope_hub's HubApi (what ``modelscope.hub.api.HubApi`` delegates to; ``import
    modelscope`` would import torch): check the token, create the repo when missing (its
    upload_folder would create it public), then its resumable ``upload_folder`` from a view of
    the files to publish, with its resume record kept outside that view."""
    import sys

    from modelscope_hub.api import HubApi

    from quantkit.core.card import base_license

    if not token:
        raise PushAuthError("ModelScope needs a write token to push", hint="pass `token` or set MODELSCOPE_API_TOKEN")
    api = HubApi(endpoint=endpoint, token=token)
    failures: list[str] = []  # upload_folder reports per-batch errors here and raises a generic one

    def note(event: dict) -> None:
        if event.get("error"):
            failures.append(str(event["error"]))

    view, tracker = publish_view(plan)
    # Its report goes to stdout and its per-file errors to its logger: the CLI says one line.
    with ms_errors(plan.repo_id, endpoint, failures), contextlib.redirect_stdout(sys.stderr), quiet_logger("modelscope_hub"):
        api.legacy.login(token)
        if not api.repo_exists(plan.repo_id, "model"):
            manifest = read_manifest(plan.artifact) or {}
            api.create_repo(
                plan.repo_id, "model", visibility="private" if private else "public", license=base_license(manifest) or None
            )
        # It commits what arrived even when other files failed: the weights go first, the card and
        # manifest last, so an interrupted push never shows a card over missing weights.
        commits = [
            api.upload_folder(
                plan.repo_id,
                "model",
                view,
                commit_message=plan.commit_message,
                revision=plan.revision,
                tracker_path=tracker,
                disable_tqdm=True,
                progress_callback=note,
                ignore_patterns=ignore,
            )
            for ignore in ([MANIFEST, CARD, RESULTS_FILE], None)
        ]
    shutil.rmtree(view, ignore_errors=True)
    commit = None
    for result in commits:
        last = result[-1] if isinstance(result, list) and result else result
        if isinstance(last, dict):
            commit = last.get("CommitId") or last.get("commit_id") or last.get("Revision") or commit
    return commit, f"{endpoint}/models/{plan.repo_id}"


@contextlib.contextmanager
def quiet_logger(name: str):
    import logging

    log = logging.getLogger(name)
    level = log.level
    log.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        log.setLevel(level)


def publish_view(plan: PushPlan) -> tuple[Path, Path]:
    """A folder holding exactly what is published (hard links to the artifact's files, the
    generated files written out), in quantkit's cache; the resume record sits beside it."""
    import hashlib

    from quantkit.core.paths import cache_dir

    key = hashlib.sha256(f"{plan.artifact}\0{plan.source}\0{plan.repo_id}\0{plan.revision}".encode()).hexdigest()[:16]
    root = cache_dir("push", key)
    view = root / "files"
    shutil.rmtree(view, ignore_errors=True)
    for f in plan.files:
        target = view / f.path
        target.parent.mkdir(parents=True, exist_ok=True)
        if f.data is not None:
            target.write_bytes(f.data)
            continue
        try:
            os.link(f.local, target)
        except OSError:  # another filesystem: a copy
            shutil.copy2(f.local, target)
    return view, root / "upload-tracker.json"


class ms_errors:
    def __init__(self, repo_id: str, endpoint: str, failures: list[str]):
        self.repo_id, self.endpoint, self.failures = repo_id, endpoint, failures

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb):
        if exc is None or not isinstance(exc, Exception):
            return False
        import requests
        from modelscope_hub import errors as ms

        text = " ".join([str(exc), *self.failures]).lower()
        status = getattr(exc, "status_code", None) or getattr(getattr(exc, "response", None), "status_code", None)
        if "quota" in text or status == 413:
            raise quota_error(self.repo_id, self.endpoint) from exc
        if isinstance(exc, ms.AuthenticationError) or status == 401 or "[401]" in text:
            raise token_error(self.endpoint, "modelscope") from exc
        if (
            isinstance(exc, (ms.PermissionDeniedError, ms.NotExistError))
            or status in (403, 404)
            or "[403]" in text
            or "permission denied" in text
        ):
            raise rights_error(self.repo_id, self.endpoint, "modelscope") from exc
        if isinstance(exc, (ms.HubError, requests.RequestException, OSError)):
            raise interrupted(self.repo_id, exc) from exc
        return False
