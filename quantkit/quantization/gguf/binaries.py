"""llama.cpp's compiled tools, built from the same llama-cpp-python sdist as the converter
(``make tools``): ``llama-quantize``, ``llama-imatrix``, ``llama-perplexity``, ``llama-bench`` and
``llama-batched-bench``, run in a subprocess; where they are found (quantkit.engines.llamacpp_tools)
lives below quantization, because bench and serve run llama-bench and llama-server too."""

import os
import re
import subprocess
from pathlib import Path

from quantkit.core import events
from quantkit.core.atomic import die_with_parent, read_json
from quantkit.core.crash import crash_error, crashed
from quantkit.core.errors import InputError, QuantizeError
from quantkit.engines.llamacpp_tools import TOOLS, TOOLS_ENV, TOOLS_HINT, tool, tools_bin  # noqa: F401 (re-exported)
from quantkit.quantization.gguf.tools import COMMIT_FILE, NEEDS_IMATRIX, key_line


def tools_record() -> dict:
    """Where the tools came from, for the manifest: their folder and llama.cpp commit."""
    folder = tools_bin()
    commit = folder / COMMIT_FILE
    record = {"tools": str(folder), "tools_commit": commit.read_text().strip() if commit.is_file() else None}
    if (folder / "BUILD.json").is_file():  # written by make's self-test: the flags they were built with
        built = read_json(folder / "BUILD.json")
        record["tools_build"] = {k: built.get(k) for k in ("cmake_args", "cflags", "amx_instructions")}
    return record


def run_tool(name: str, args: list[str], echo: bool = True, timeout: float | None = None) -> str:
    """Run one tool, relaying its output line by line when ``echo`` (quantkit.core.events); its whole output, or a
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
                    events.tool_output(line)
        except BaseException:  # SIGTERM / Ctrl-C on quantkit: stop the tool too
            proc.kill()
            raise
        rc = proc.wait(timeout)
    output = "".join(lines)
    if crashed(rc):
        raise crash_error("llama.cpp", f"running {name}", rc, key_line(output))
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
