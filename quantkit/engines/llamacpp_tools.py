"""Where llama.cpp's compiled tools live: ``llama-quantize``, ``llama-imatrix``, ``llama-perplexity``,
``llama-bench``, ``llama-batched-bench`` and ``llama-server``, built by ``make tools`` from the same
llama-cpp-python sdist as the runtime (one commit), found in the quantkit cache or ``LLAMA_CPP_TOOLS``.
Here, below quantization, bench and serve, because all three run them."""

import os
from importlib import metadata
from pathlib import Path

from quantkit.core.errors import DependencyError
from quantkit.core.paths import quantkit_home

DIST = "llama-cpp-python"
TOOLS = ("llama-quantize", "llama-imatrix", "llama-perplexity", "llama-bench", "llama-batched-bench", "llama-server")
TOOLS_ENV = "LLAMA_CPP_TOOLS"  # a folder holding the tools (e.g. a llama.cpp checkout's build/bin)
TOOLS_HINT = (
    "run `make tools` in the quantkit checkout (it builds them from the same llama-cpp-python sdist, "
    f"about 15 min on 2 cores), or set {TOOLS_ENV} to a llama.cpp build's bin folder of the same commit"
)


def runtime_version() -> str:
    try:
        return metadata.version(DIST)
    except metadata.PackageNotFoundError:
        raise DependencyError(f"{DIST} is not installed", hint="pip install 'quantkit[gguf]'") from None


def tools_bin() -> Path:
    """The folder with llama.cpp's tools: ``LLAMA_CPP_TOOLS``, else the newest complete build for
    the installed llama-cpp-python under the quantkit cache (the test cache's or ~/.cache/quantkit)."""
    env = os.environ.get(TOOLS_ENV)
    if env:
        folder = Path(env).expanduser()
        missing = [t for t in TOOLS if not (folder / t).is_file()]
        if missing:
            raise DependencyError(f"{TOOLS_ENV}={folder} has no {', '.join(missing)}", hint=TOOLS_HINT)
        return folder
    version = runtime_version()
    builds = []
    for home in dict.fromkeys([quantkit_home(), Path.home() / ".cache" / "quantkit"]):
        builds += [
            b
            for b in (home / "llama.cpp-tools").glob(f"{version}-*/bin")
            if (b.parent / ".built").is_file() and all((b / t).is_file() for t in TOOLS)
        ]
    if not builds:
        raise DependencyError(f"llama.cpp's tools ({', '.join(TOOLS)}) are not built for {DIST} {version}", hint=TOOLS_HINT)
    return max(builds, key=lambda b: (b.parent / ".built").stat().st_mtime)


def tool(name: str) -> Path:
    """The path of one of llama.cpp's tools, e.g. ``tool("llama-bench")``."""
    if name not in TOOLS:
        raise ValueError(f"{name} is not one of {TOOLS}")
    return tools_bin() / name
