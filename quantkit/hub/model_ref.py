"""Turn what a user typed (a local folder, ``bundled:NAME`` or a hub repo id) into a local folder."""

from pathlib import Path

from quantkit.core.errors import InputError
from quantkit.hub.bundled import is_bundled, materialize


def resolve_model(
    spec: str | Path, source: str = "hf", revision: str | None = None, token: str | None = None, allow_pickle: bool = False
) -> Path:
    """A local HF model folder for ``spec``, downloading or materializing it if needed."""
    text = str(spec)
    if is_bundled(text):
        return materialize(text)
    path = Path(text).expanduser()
    if path.exists():
        if not path.is_dir():
            raise InputError(f"{path} is a file; expected a model folder")
        return path.resolve()
    if text.startswith((".", "/", "~")) or text.count("/") != 1:
        raise InputError(f"{text} is neither an existing folder nor a hub repo id (owner/name)")
    from quantkit.hub.download import download

    return download(text, source=source, revision=revision, token=token, allow_pickle=allow_pickle).path


def resolve_artifact(spec: str | Path) -> Path:
    """What bench, chat, serve and ``qk.load`` run: a file (.gguf) as it is, anything else as a
    model folder (an artifact or HF folder, ``bundled:NAME``, a hub repo id, fetched)."""
    path = Path(str(spec)).expanduser()
    if path.is_file():
        return path.resolve()
    return resolve_model(spec)


def model_name(spec: str | Path) -> str:
    """A short name for output folders: the last part of the folder, repo id or bundled name."""
    text = str(spec).rstrip("/")
    if is_bundled(text):
        return text.split(":", 1)[1]
    return Path(text).name or "model"
