"""What ``push`` would publish, decided before anything leaves the machine: the artifact verified
against ``quantkit.json``, its gates passed, only the files the manifest lists (never a staging
folder, a hidden file or a log), no text file holding an access token, and the manifest and card
as the repo shows them (no local paths)."""

import json
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from quantkit.core.atomic import PARTIAL_MARK
from quantkit.core.card import base_id, hub_usage, render
from quantkit.core.card_results import read_results
from quantkit.core.errors import GateFailed, InputError, IntegrityError
from quantkit.core.manifest import CARD, MANIFEST, RESULTS_FILE, read_manifest, verify
from quantkit.core.verdict import overall, reasons_of, verdict_of

SOURCES = ("hf", "modelscope")
DEFAULT_REVISION = {"hf": "main", "modelscope": "master"}
TOKEN_ENV = {"hf": "HF_TOKEN", "modelscope": "MODELSCOPE_API_TOKEN"}
ENDPOINT_ENV = {"hf": "HF_ENDPOINT", "modelscope": "MODELSCOPE_ENDPOINT"}
DEFAULT_ENDPOINT = {"hf": "https://huggingface.co", "modelscope": "https://www.modelscope.cn"}
NEVER = re.compile(r"(^|/)\.|\.log$|\.partial|(^|/)(run|stages)(/|$)|\.incomplete$")
TOKEN_LIKE = re.compile(rb"\bhf_[A-Za-z0-9]{30,}\b")
BINARY_SUFFIXES = (".safetensors", ".gguf", ".bin", ".pt", ".png")


@dataclass
class PushFile:
    path: str  # in the repo
    size: int
    local: Path | None = None  # uploaded from disk ...
    data: bytes | None = None  # ... or generated for the repo (card, manifest, results)


@dataclass
class PushPlan:
    artifact: Path
    repo_id: str
    source: str
    revision: str
    files: list[PushFile]
    card: str
    commit_message: str
    passed: bool | None  # None: never benchmarked; True only for the "passed" verdict
    skipped: list[str] = field(default_factory=list)
    verdict: str = "passed"  # passed | failed | unvalidated (never benchmarked counts as unvalidated)
    why: list[str] = field(default_factory=list)  # what failed, or why it is unvalidated

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)


def plan_push(
    artifact: str | Path,
    repo_id: str,
    source: str = "hf",
    revision: str | None = None,
    allow_failed: bool = False,
    token: str | None = None,
    allow_unvalidated: bool = False,
) -> PushPlan:
    """What would be published, after every check that needs no network."""
    from quantkit.core.modelinfo import REPO_ID

    if source not in SOURCES:
        raise InputError(f"unknown source {source!r}", hint=f"choose one of {', '.join(SOURCES)}")
    if not REPO_ID.fullmatch(repo_id) or ".." in repo_id:
        raise InputError(f"{repo_id!r} is not a hub repo id", hint="expected owner/name, e.g. acme/smollm2-135m-gguf")
    folder = Path(artifact).expanduser().resolve()
    if PARTIAL_MARK in folder.name or folder.name.startswith("."):
        raise InputError(f"{folder} is a staging folder of an unfinished run", hint="push the finished artifact folder")
    manifest = read_manifest(folder) if folder.is_dir() else None
    if manifest is None:
        raise InputError(
            f"{folder} is not a quantkit artifact (no {MANIFEST})",
            hint="push a folder written by quantkit quantize / quantkit run",
        )
    try:
        verify(folder)
    except IntegrityError as exc:
        raise IntegrityError(
            f"refusing to push {folder.name}: {exc.message}",
            hint="the artifact was modified after it was made; quantize it again",
        ) from exc
    results = read_results(folder)
    verdict, why = judge(results)
    passed = None if results is None else verdict == "passed"
    if verdict == "failed" and not allow_failed:
        raise GateFailed(
            f"refusing to push {folder.name}: it failed its gates ({why[0]})",
            hint="`allow_failed` (--allow-failed) publishes it anyway, with the failures in its card",
        )
    if verdict == "unvalidated" and not (allow_unvalidated or allow_failed):
        raise GateFailed(
            f"refusing to push {folder.name}: it is unvalidated ({'; '.join(why)})",
            hint="bench it against its base with the smoke chat and quality on (quantkit run RECIPE, or quantkit bench "
            "ARTIFACT --base BASE --json r.json && quantkit report r.json); --allow-unvalidated publishes it as it is, "
            "said in its card",
        )
    revision = revision or DEFAULT_REVISION[source]
    files, skipped = [], []
    for row in manifest.get("files", []):
        if NEVER.search(row["path"]):
            skipped.append(row["path"])
            continue
        files.append(PushFile(row["path"], row["size"], local=folder / row["path"]))
    check_no_secrets(files, token)
    names = [f.path for f in files]
    notice = publication_notice(verdict, why)
    card = render(manifest, results, hub_usage(manifest, names, repo_id, source), repo_id.split("/")[-1], notice)
    generated = {MANIFEST: (json.dumps(public_manifest(manifest), indent=2) + "\n").encode(), CARD: str(card).encode()}
    if results is not None:
        generated[RESULTS_FILE] = (json.dumps({"schema": 1, "results": results}, indent=2, ensure_ascii=False) + "\n").encode()
    files += [PushFile(name, len(data), data=data) for name, data in generated.items()]
    return PushPlan(
        artifact=folder,
        repo_id=repo_id,
        source=source,
        revision=revision,
        files=files,
        card=str(card),
        commit_message=commit_message(manifest),
        passed=passed,
        skipped=skipped,
        verdict=verdict,
        why=why,
    )


def judge(results: list[dict] | None) -> tuple[str, list[str]]:
    """The artifact's verdict from its stored results, and the lines that explain it."""
    if results is None:
        return "unvalidated", ["never benchmarked: it has no bench results"]
    verdict = overall(results) or "unvalidated"
    if verdict == "failed":
        return verdict, [f"{r.get('name')}: {(r.get('failures') or ['failed'])[0]}" for r in results if verdict_of(r) == "failed"]
    if verdict == "unvalidated":
        why = [f"{r.get('name')}: {w}" for r in results if verdict_of(r) == "unvalidated" for w in reasons_of(r)]
        return verdict, why or ["no results"]
    return verdict, []


def publication_notice(verdict: str, why: list[str]) -> str:
    """The card's line for an artifact published without passing its gates (empty when it passed)."""
    if verdict == "unvalidated":
        return f"**Published unvalidated** (`--allow-unvalidated`): {'; '.join(why)}."
    if verdict == "failed":
        return f"**Published although it failed its gates** (`--allow-failed`): {'; '.join(why)}."
    return ""


def check_no_secrets(files: list[PushFile], token: str | None) -> None:
    """Refuse a text file that holds the token in use or anything shaped like an HF token."""
    for f in files:
        if f.path.endswith(BINARY_SUFFIXES) or f.size > 16 << 20:
            continue
        data = f.local.read_bytes()
        if TOKEN_LIKE.search(data) or (token and token.encode() in data):
            raise InputError(
                f"refusing to push: {f.path} contains an access token", hint="remove it from the file, then quantize again"
            )


def public_manifest(manifest: dict) -> dict:
    """The manifest as published: the same record without this machine's paths."""

    def clean(value):
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items() if not (k == "path" and isinstance(v, str) and v.startswith("/"))}
        if isinstance(value, list):
            return [clean(v) for v in value]
        if isinstance(value, str) and (value.startswith(("/", "~")) or value.startswith(str(Path.home()))):
            return PurePosixPath(value).name
        return value

    public = clean(manifest)
    source = public.get("source") or {}
    if base_id(manifest) and source.get("model") != base_id(manifest):
        source["model"] = base_id(manifest)
    return public


def commit_message(manifest: dict) -> str:
    from quantkit import __version__

    settings = ", ".join(f"{k}={v}" for k, v in (manifest.get("settings") or {}).items())
    base = base_id(manifest) or "a local checkpoint"
    text = f"quantkit {__version__}: {manifest.get('method', '?')} of {base}" + (f" ({settings})" if settings else "")
    return text if len(text) <= 200 else text[:197] + "..."
