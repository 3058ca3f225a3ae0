"""llama.cpp's own tools, driven from quantkit: ``convert_hf_to_gguf.py`` (run in a subprocess)
and the compiled tools ``llama-quantize``, ``llama-imatrix``, ``llama-perplexity``, ``llama-bench``
and ``llama-batched-bench``.

Converter, tools and runtime must come from one llama.cpp commit. The converter is unpacked once
from the llama-cpp-python source distribution of the installed version (the installed wheel does
not carry it), or taken from a user's checkout (``--llama-cpp-dir`` / ``LLAMA_CPP_DIR``). The tools
are built from that same sdist by ``make tools`` (part of ``make install``) into the quantkit cache,
``llama.cpp-tools/<version>-<cmake args hash>/bin``, or found in ``LLAMA_CPP_TOOLS``.
"""

import ast
import collections
import os
import re
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from quantkit.core import events
from quantkit.core.atomic import atomic_dir, die_with_parent
from quantkit.core.crash import crash_error, crashed
from quantkit.core.errors import DependencyError, InputError, PreflightError, QuantizeError
from quantkit.core.paths import cache_dir, quantkit_home

DIST = "llama-cpp-python"
SCRIPT = "convert_hf_to_gguf.py"
# What the converter needs beside it, inside the sdist's vendor/llama.cpp/.
VENDORED = (SCRIPT, "conversion/", "gguf-py/", "requirements/", "LICENSE")
COMMIT_FILE = "COMMIT"
# ``--gguf-type`` -> its nominal bits (llama-quantize takes the name itself); F16/BF16 come from
# the converter. IQ types are llama.cpp's importance-matrix-aware grids.
FTYPES = {
    "F16": 16,
    "BF16": 16,
    "Q8_0": 8,
    "Q6_K": 6,
    "Q5_K_M": 5,
    "Q5_K_S": 5,
    "Q5_0": 5,
    "Q4_K_M": 4,
    "Q4_K_S": 4,
    "Q4_0": 4,
    "IQ4_XS": 4,
    "IQ4_NL": 4,
    "Q3_K_L": 3,
    "Q3_K_M": 3,
    "Q3_K_S": 3,
    "IQ3_M": 3,
    "IQ3_S": 3,
    "IQ3_XS": 3,
    "IQ3_XXS": 3,
    "Q2_K": 2,
    "Q2_K_S": 2,
    "IQ2_M": 2,
    "IQ2_S": 2,
    "IQ2_XS": 2,
    "IQ2_XXS": 2,
    "IQ1_M": 1,
    "IQ1_S": 1,
}
CONVERTER_TYPES = ("F16", "BF16")
# llama.cpp refuses these without an importance matrix (src/llama-quant.cpp tensor_requires_imatrix:
# IQ1/IQ2/IQ3_XXS tensors, and Q2_K inside Q2_K_S; IQ2_M and IQ3_XS files hold such tensors).
NEEDS_IMATRIX = frozenset({"IQ1_S", "IQ1_M", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ2_M", "IQ3_XXS", "IQ3_XS", "Q2_K_S"})


@dataclass(frozen=True)
class Converter:
    root: Path  # holds convert_hf_to_gguf.py, conversion/ and gguf-py/
    commit: str | None
    origin: str  # where it came from, for the manifest

    @property
    def script(self) -> Path:
        return self.root / SCRIPT


def installed_version() -> str:
    try:
        return metadata.version(DIST)
    except metadata.PackageNotFoundError:
        raise DependencyError(f"{DIST} is not installed", hint="pip install 'quantkit[gguf]'") from None


def find_converter(llama_cpp_dir: Path | str | None = None) -> Converter:
    """The converter of ``llama_cpp_dir`` (or ``LLAMA_CPP_DIR``), else the one vendored with the
    installed llama-cpp-python, unpacked into the quantkit cache on first use."""
    user_dir = llama_cpp_dir or os.environ.get("LLAMA_CPP_DIR")
    if user_dir:
        root = Path(user_dir).expanduser().resolve()
        if not (root / SCRIPT).is_file() or not (root / "gguf-py").is_dir():
            raise InputError(
                f"{root} has no {SCRIPT} with gguf-py/ beside it",
                hint="point `llama_cpp_dir` at the root of a llama.cpp checkout",
            )
        return Converter(root, git_commit(root), f"llama.cpp checkout {root}")
    version = installed_version()
    root = vendored_root(version)
    return Converter(root, runtime_commit(), f"{DIST} {version} sdist (vendor/llama.cpp)")


def vendored_root(version: str) -> Path:
    """The converter unpacked from the sdist of ``version`` (unpacked on first use)."""
    root = cache_dir("llama.cpp") / f"{DIST}-{version}"
    if not (root / COMMIT_FILE).is_file():
        unpack_vendored(find_sdist(version), root)
    return root


def runtime_commit() -> str | None:
    """The llama.cpp commit of the installed llama-cpp-python: that of the sdist it was built from."""
    return (vendored_root(installed_version()) / COMMIT_FILE).read_text().strip() or None


def cached_converter() -> Converter | None:
    """The converter if it needs no unpacking or download (for cheap questions like ``supports``)."""
    try:
        if os.environ.get("LLAMA_CPP_DIR"):
            return find_converter()
        root = quantkit_home() / "llama.cpp" / f"{DIST}-{installed_version()}"
    except (DependencyError, InputError):
        return None
    return find_converter() if (root / COMMIT_FILE).is_file() else None


def git_commit(root: Path) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def find_sdist(version: str) -> Path:
    """The sdist of ``version``: from a local wheel cache or pip's find-links, else ``pip download``."""
    name = f"llama_cpp_python-{version}.tar.gz"
    for folder in sdist_folders():
        if (folder / name).is_file():
            return folder / name
    target = cache_dir("downloads")
    events.logger(__name__).info(f"downloading the {DIST} {version} sources for llama.cpp's converter")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "-q",
            "--no-deps",
            "--no-binary",
            ":all:",
            f"{DIST}=={version}",
            "-d",
            str(target),
        ],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0 or not (target / name).is_file():
        raise DependencyError(
            f"could not get the {DIST} {version} source distribution: {key_line(proc.stderr)}",
            hint="pass `llama_cpp_dir=PATH`, a llama.cpp checkout of the same commit",
        )
    return target / name


def sdist_folders() -> list[Path]:
    """Where an sdist may already be: quantkit's wheel cache (the Makefile keeps it) and pip's find-links."""
    folders = [quantkit_home() / "wheels", Path.home() / ".cache" / "quantkit" / "wheels", cache_dir("downloads")]
    links = os.environ.get("PIP_FIND_LINKS", "").split()
    try:
        out = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True, timeout=30)
        links += re.findall(r"find-links='([^']*)'", out.stdout)
    except (OSError, subprocess.TimeoutExpired):
        pass
    for link in links:
        folders += [Path(p.removeprefix("file://")) for p in link.split()]
    return [f for f in dict.fromkeys(folders) if f.is_dir()]


def unpack_vendored(sdist: Path, root: Path) -> None:
    """Extract the converter, its packages and the vendored gguf-py (PyPI gguf breaks it)."""
    with tarfile.open(sdist) as tar, atomic_dir(root, overwrite=True) as staging:
        top = tar.getmembers()[0].name.split("/")[0]
        vendor = f"{top}/vendor/llama.cpp/"
        members = []
        for member in tar.getmembers():
            rel = member.name.removeprefix(vendor)
            if member.name.startswith(vendor) and rel.startswith(VENDORED) and (member.isfile() or member.isdir()):
                member.name = rel
                members.append(member)
        if not any(m.name == SCRIPT for m in members):
            raise DependencyError(
                f"{sdist.name} carries no vendor/llama.cpp/{SCRIPT}", hint="pass `llama_cpp_dir=PATH`, a llama.cpp checkout"
            )
        tar.extractall(staging, members=members, filter="data")
        # The sdist keeps the submodule's git metadata: its HEAD is the llama.cpp commit.
        try:
            head = tar.extractfile(f"{top}/.git/modules/vendor/llama.cpp/HEAD")
            commit = head.read().decode().strip() if head else ""
        except KeyError:
            commit = ""
        (staging / COMMIT_FILE).write_text(commit + "\n")


def supported_architectures(converter: Converter) -> set[str]:
    """The HF architectures the converter registers (its TEXT_MODEL_MAP; older checkouts
    register classes with ``@ModelBase.register("...")`` in the script itself)."""
    package = converter.root / "conversion" / "__init__.py"
    if package.is_file():
        for node in ast.walk(ast.parse(package.read_text())):
            if isinstance(node, ast.AnnAssign | ast.Assign):
                targets = [node.target] if isinstance(node, ast.AnnAssign) else node.targets
                if any(getattr(t, "id", None) == "TEXT_MODEL_MAP" for t in targets):
                    return set(ast.literal_eval(node.value))
    sources = [converter.script, *sorted((converter.root / "conversion").glob("*.py"))]
    found = set()
    for path in sources:
        if path.is_file():
            for args in re.findall(r"\.register\(([^)]*)\)", path.read_text()):
                found.update(re.findall(r"[\"']([A-Za-z0-9_]+)[\"']", args))
    return found


def converter_env(converter: Converter) -> dict:
    env = dict(os.environ)
    env.pop("NO_LOCAL_GGUF", None)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(converter.root / "gguf-py"), env.get("PYTHONPATH")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def run_converter(converter: Converter, args: list[str], echo: bool = True) -> list[str]:
    """Run the converter with ``args``, relaying its output (quantkit.core.events); raise with its key line."""
    cmd = [sys.executable, str(converter.script), *args]
    tail: collections.deque[str] = collections.deque(maxlen=400)
    with subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
        env=converter_env(converter),
        preexec_fn=die_with_parent,
    ) as proc:
        try:
            for line in proc.stdout:  # text mode splits tqdm's \r updates too
                tail.append(line.rstrip("\n"))
                if echo:
                    events.tool_output(line)
        except BaseException:  # SIGTERM / Ctrl-C on quantkit: stop the converter now, not at its next write
            proc.kill()
            raise
        rc = proc.wait()
    if crashed(rc):  # the converter is Python + torch: a fault there is the runtime's, not the checkpoint's
        raise crash_error("llama.cpp's converter (Python)", "converting the checkpoint", rc, key_line("\n".join(tail)))
    if rc != 0:
        raise converter_error(list(tail))
    return list(tail)


def converter_error(lines: list[str]) -> Exception:
    """One error for a failed conversion, keeping the converter's own reason."""
    reason = key_line("\n".join(lines))
    text = "\n".join(lines)
    if "pre-tokenizer was not recognized" in text:
        chk = re.search(r"chkhsh:\s*([0-9a-f]{64})", text)
        return PreflightError(
            f"llama.cpp's converter does not recognize this tokenizer's pre-tokenizer: {reason}"
            + (f" (chkhsh {chk.group(1)[:16]}...)" if chk else ""),
            hint="llama.cpp would tokenize differently than the model was trained; use a tokenizer it knows "
            "or a newer llama.cpp checkout via --llama-cpp-dir",
        )
    if "is not supported" in reason or "not supported!" in reason:
        return PreflightError(
            f"llama.cpp's converter: {reason}", hint="see `python convert_hf_to_gguf.py --print-supported-models`"
        )
    return QuantizeError(
        f"convert_hf_to_gguf.py failed: {reason}", hint="set QUANTKIT_DEBUG=1 and rerun to see its full output above"
    )


ERROR_LINE = re.compile(r"^(?:[A-Za-z_.]+(?:Error|Exception|Exit)\b.*|ERROR:.*|Error:.*)$")


def key_line(output: str) -> str:
    """The most telling line of a tool's output: the last exception or ERROR line, else the last line."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    for line in reversed(lines):
        if ERROR_LINE.match(line):
            return re.sub(r"^ERROR:[\w.-]+:", "", line).strip()
    return lines[-1] if lines else "no output"


def converter_view(model_dir: Path, scratch: Path) -> tuple[Path, list[str]]:
    """The folder to hand the converter, and the fixes applied to get it.

    A ByteLevel BPE tokenizer.json that also says ``byte_fallback: true`` (transformers writes
    that when it turns a GGUF back into an HF checkpoint) is taken by the converter for a Llama-2
    SentencePiece vocabulary and converted wrongly. Byte fallback never fires under ByteLevel, so
    the converter gets a view of the folder with it off; token parity then proves the result."""
    import json

    path = model_dir / "tokenizer.json"
    try:
        tok = json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, json.JSONDecodeError):
        return model_dir, []
    from quantkit.hub.bundled import unfallback_byte_level_bpe

    if not unfallback_byte_level_bpe(tok):
        return model_dir, []
    view = scratch / model_dir.name
    view.mkdir(parents=True)
    for entry in model_dir.iterdir():
        if entry.name != "tokenizer.json":
            (view / entry.name).symlink_to(entry.resolve())
    (view / "tokenizer.json").write_text(json.dumps(tok, ensure_ascii=False))
    return view, ["tokenizer.json: byte_fallback off (ByteLevel BPE; the converter would read it as SentencePiece)"]


def convert(converter: Converter, model_dir: Path, outfile: Path, outtype: str = "f16", echo: bool = True) -> list[str]:
    """Convert an HF folder to one GGUF file; returns the converter arguments used."""
    args = [str(model_dir), "--outfile", str(outfile), "--outtype", outtype.lower()]
    run_converter(converter, args, echo=echo)
    if not outfile.is_file():
        raise QuantizeError(f"{SCRIPT} reported success but wrote no {outfile.name}")
    return [SCRIPT, "MODEL_DIR", "--outfile", outfile.name, *args[3:]]  # paths of this run mean nothing later
