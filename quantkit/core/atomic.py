"""Write an output folder atomically: build it in a hidden sibling, rename it when complete.

A killed run leaves at most a ``.NAME.partial-*`` folder, never one that looks finished, and no
child process still writing into it (``die_with_parent``).
"""

import contextlib
import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path

from quantkit.core.errors import InputError

PARTIAL_MARK = ".partial-"


def check_output(final: Path, overwrite: bool) -> None:
    """Refuse an existing output unless asked to overwrite; call before any heavy work."""
    if final.exists() and not overwrite:
        raise InputError(f"output {final} already exists", hint="pass `overwrite=True` to replace it")


@contextlib.contextmanager
def atomic_dir(final: Path | str, overwrite: bool = False):
    """Yield a fresh staging folder; on success it replaces ``final``, on error it is removed."""
    final = Path(final).expanduser().resolve()
    check_output(final, overwrite)
    final.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_partials(final)
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}{PARTIAL_MARK}", dir=final.parent))
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    staging.chmod(0o755)  # mkdtemp makes it private; a finished artifact is an ordinary folder
    if final.exists():
        # Move the old one aside first so there is never a moment with a half-replaced folder.
        trash = final.with_name(f".{final.name}.old-{os.getpid()}")
        os.replace(final, trash)
        os.replace(staging, final)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(staging, final)


def clean_stale_partials(final: Path) -> None:
    """Remove staging folders that a killed run of the same output left behind."""
    if not final.parent.is_dir():
        return
    for stale in final.parent.glob(f".{final.name}{PARTIAL_MARK}*"):
        shutil.rmtree(stale, ignore_errors=True)


def die_with_parent() -> None:
    """``preexec_fn`` for a helper process (converter, llama.cpp tool, verifier): the kernel kills it
    when quantkit dies, even by SIGKILL, instead of it running on into a staging folder."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def write_json(path: Path | str, data, **dump) -> Path:
    """Write ``data`` as JSON through a temp file in the same folder and a rename, so a killed
    process never leaves half a record (indent=2 unless ``dump`` says otherwise)."""
    import json

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(data, **{"indent": 2, **dump}) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


_REQUIRED = object()


def read_json(path: Path | str, default=_REQUIRED, hint: str | None = None):
    """The JSON in ``path``: quantkit's own records (manifests, stage records, results, caches).
    With ``default``: that when the file is missing or damaged (a cache entry to redo); without,
    a damaged file is an InputError naming it (with ``hint``)."""
    import json

    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:  # ValueError: JSONDecodeError, UnicodeDecodeError
        if default is not _REQUIRED:
            return default
        if isinstance(exc, OSError):
            raise
        raise InputError(f"{path} is not valid JSON: {exc}", hint=hint) from exc
