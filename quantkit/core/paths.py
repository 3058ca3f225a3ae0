"""Where quantkit keeps things: its own cache beside the ecosystem's (HF_HOME, MODELSCOPE_CACHE)."""

import os
from pathlib import Path


def quantkit_home() -> Path:
    """``QUANTKIT_HOME``, default ``~/.cache/quantkit`` (XDG_CACHE_HOME respected)."""
    env = os.environ.get("QUANTKIT_HOME")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "quantkit"


def cache_dir(*parts: str) -> Path:
    """A sub-folder of the quantkit cache, created on demand."""
    path = quantkit_home().joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path
