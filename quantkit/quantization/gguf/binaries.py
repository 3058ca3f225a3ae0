"""llama.cpp's compiled tools, built from the same llama-cpp-python sdist as the converter
(``make tools``): ``llama-quantize``, ``llama-imatrix``, ``llama-perplexity``, ``llama-bench`` and
``llama-batched-bench``, found in the quantkit cache or ``LLAMA_CPP_TOOLS``, run in a subprocess."""

import os
import re
import subprocess
import sys
from pathlib import Path

from quantkit.core.atomic import die_with_parent
from quantkit.core.errors import DependencyError, InputError, QuantizeError
from quantkit.core.paths import quantkit_home
from quantkit.quantization.gguf.tools import COMMIT_FILE, DIST, NEEDS_IMATRIX, installed_version, key_line

TOOLS = ("llama-quantize", "llama-imatrix", "llama-perplexity", "llama-bench", "llama-batched-bench")
TOOLS_ENV = "LLAMA_CPP_TOOLS"  # a folder holding the tools (e.g. a llama.cpp checkout's build/bin)
TOOLS_HINT = (
    "run `make tools` in the quantkit checkout (it builds them from the same llama-cpp-python sdist, "
    f"about 10 min on 2 cores), or set {TOOLS_ENV} to a llama.cpp build's bin folder of the same commit"
)


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
    version = installed_version()
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
    """The path of one of llama.cpp's tools, e.g. ``tool("llama-imatrix")``."""
    if name not in TOOLS:
        raise ValueError(f"{name} is not one of {TOOLS}")
    return tools_bin() / name


def tools_record() -> dict:
    """Where the tools came from, for the manifest: their folder and llama.cpp commit."""
    folder = tools_bin()
    commit = folder / COMMIT_FILE
    return {"tools": str(folder), "tools_commit": commit.read_text().strip() if commit.is_file() else None}


def run_tool(name: str, args: list[str], echo: bool = True, timeout: float | None = None) -> str:
    """Run one tool, streaming its output to stderr when ``echo``; its whole output, or a
    QuantizeError with its key line when it fails."""
    cmd = [str(tool(name)), *map(str, args)]
    lines = []
    with subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace", preexec_fn=die_with_parent
    ) as proc:
        try:
            for line in proc.stdout:
                lines.append(line)
                if echo:
                    sys.stderr.write(line)
                    sys.stderr.flush()
        except BaseException:  # SIGTERM / Ctrl-C on quantkit: stop the tool too
            proc.kill()
            raise
        rc = proc.wait(timeout)
    output = "".join(lines)
    if rc != 0:
        raise QuantizeError(
            f"{name} failed (exit code {rc}): {key_line(output)}", hint="set QUANTKIT_DEBUG=1 and rerun to see its full output"
        )
    return output


FALLBACK_LINE = re.compile(
    r"(\S+)\s+- ncols\s+(\d+) not divisible by\s+(\d+) \(required for type\s+(\w+)\)\s*"
    r"(?:\([^)]*\)\s*)?-> falling back to\s+(\w+)"
)


def quantize_file(
    src: Path, dst: Path, gguf_type: str, imatrix: Path | None = None, nthread: int = 0, echo: bool = True
) -> list[dict]:
    """``llama-quantize [--imatrix FILE] SRC DST TYPE THREADS`` (``nthread`` 0: all cores). Returns
    the tensors it fell back to another type for, as llama.cpp logged them (name, cols, required, used)."""
    if gguf_type in NEEDS_IMATRIX and imatrix is None:
        raise InputError(f"{gguf_type} needs an importance matrix", hint="leave the importance matrix on (`imatrix` unset)")
    args = [*(["--imatrix", imatrix] if imatrix else []), src, dst, gguf_type, nthread or os.cpu_count() or 1]
    output = run_tool("llama-quantize", args, echo=echo)
    if not Path(dst).is_file():
        raise QuantizeError(f"llama-quantize reported success but wrote no {Path(dst).name}")
    return [
        {"tensor": m[1], "cols": int(m[2]), "required": m[4].upper(), "used": m[5].upper()}
        for m in FALLBACK_LINE.finditer(output)
    ]


IMATRIX_CHUNKS = re.compile(r"computing over (\d+) chunks")


def compute_imatrix(model: Path, text_file: Path, out: Path, ctx: int, threads: int = 0, echo: bool = True) -> dict:
    """``llama-imatrix`` over ``text_file`` in chunks of ``ctx`` tokens (special tokens of rendered
    chats parsed as such, as the HF tokenizer does for AWQ); writes ``out`` (GGUF imatrix)."""
    args = [
        "-m",
        model,
        "-f",
        text_file,
        "-o",
        out,
        "-c",
        ctx,
        "-b",
        ctx,
        "-ub",
        ctx,
        "--parse-special",
        "--no-ppl",
        "-ngl",
        0,
        "-t",
        threads or os.cpu_count() or 1,
    ]
    output = run_tool("llama-imatrix", args, echo=echo)
    if not Path(out).is_file():
        raise QuantizeError(f"llama-imatrix reported success but wrote no {Path(out).name}")
    chunks = IMATRIX_CHUNKS.search(output)
    return {"ctx": ctx, "chunks": int(chunks.group(1)) if chunks else None}
