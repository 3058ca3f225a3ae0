"""The self-test of a fresh llama.cpp build, run by ``make install`` before the build is stamped:
a build that faults on this CPU, or a CUDA build that came back without CUDA (pip's wheel cache),
stops the install with one line naming the cause and the setting that changes it.

    python -m quantkit.doctor.build_check wheel DIR --cmake-args ARGS --cflags FLAGS
    python -m quantkit.doctor.build_check tools BIN_DIR
"""

import argparse
import json
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from quantkit.core.errors import QuantkitError
from quantkit.doctor.smokes import llama_bench
from quantkit.engines.llamacpp_build import cpu_features, library_file, smoke
from quantkit.hub.bundled import DEFAULT, bundled_gguf

BUILD_RECORD = "BUILD.json"  # beside the wheel / in the tools' bin: what it was built with, what it ran
FLAGS_HINT = (
    "rebuild with other CPU flags, e.g. `make install LLAMA_CPU_CFLAGS='-mno-amx-tile -mno-amx-int8 -mno-amx-bf16 "
    "-mno-avx512f'` or LLAMA_CMAKE_ARGS='-DGGML_NATIVE=OFF -DGGML_AVX2=ON'; `quantkit doctor` shows what the CPU has"
)
CUDA_ARG = re.compile(r"-DGGML_CUDA=(on|1|true|yes)\b", re.IGNORECASE)
AMX_OPCODES = re.compile(
    r"\b(ldtilecfg|sttilecfg|tileloadd|tileloaddt1|tilestored|tilezero|tilerelease|tdp[a-z0-9]+ps|tdpb[su]{2}d)\b"
)


class BuildCheckFailed(QuantkitError):
    """The fresh build does not run here or is not what was asked for."""


def amx_instructions(library: Path) -> int | None:
    """How many AMX tile instructions the library's machine code holds (None: no objdump)."""
    if shutil.which("objdump") is None or not library.is_file():
        return None
    out = subprocess.run(["objdump", "-d", "--no-show-raw-insn", str(library)], capture_output=True, text=True, errors="replace")
    return len(AMX_OPCODES.findall(out.stdout))


def wheel_has_cuda(wheel: Path) -> bool:
    with zipfile.ZipFile(wheel) as zf:
        return any(Path(name).name.startswith("libggml-cuda") for name in zf.namelist())


def check_wheel(wheel_dir: Path, cmake_args: str, cflags: str) -> dict:
    """The built wheel (installed in this interpreter) decodes the bundled model in a child."""
    wheels = sorted(wheel_dir.glob("llama_cpp_python-*.whl"))
    if not wheels:
        raise BuildCheckFailed(f"no llama-cpp-python wheel in {wheel_dir}", hint="the build did not finish: see its output above")
    if CUDA_ARG.search(cmake_args) and not wheel_has_cuda(wheels[-1]):
        raise BuildCheckFailed(
            f"{wheels[-1].name} was asked for with CUDA ({cmake_args}) but holds no libggml-cuda: a CPU build "
            "(pip's wheel cache hands back an earlier build of the same sdist)",
            hint=f"remove {wheel_dir} and run `make install` again (the Makefile builds with --no-cache-dir)",
        )
    answer = run_smoke("decoding the bundled model through llama-cpp-python")
    lib = library_file()
    record = {
        "cmake_args": cmake_args,
        "cflags": cflags,
        "cpu_features": cpu_features(),
        "system_info": answer["system_info"],
        "gpu_offload": answer["gpu_offload"],
        "amx_instructions": amx_instructions(lib) if lib else None,
        "smoke": {"text": answer["text"], "tok_s": answer["tok_s"]},
    }
    (wheel_dir / BUILD_RECORD).write_text(json.dumps(record, indent=1) + "\n")
    return record


def run_smoke(action: str) -> dict:
    try:
        return smoke(bundled_gguf(DEFAULT), threads=1)
    except QuantkitError as exc:
        raise BuildCheckFailed(f"{exc.message} [{action}]: this build is not stamped", hint=FLAGS_HINT) from None


def check_tools(bin_dir: Path, cmake_args: str, cflags: str) -> dict:
    """llama-bench of the fresh tools decodes the bundled model."""
    try:
        rows = llama_bench(bin_dir / "llama-bench", bundled_gguf(DEFAULT))
    except QuantkitError as exc:
        raise BuildCheckFailed(f"{exc.message}: this build is not stamped", hint=FLAGS_HINT) from None
    record = {
        "cmake_args": cmake_args,
        "cflags": cflags,
        "cpu_features": cpu_features(),
        "llama_bench": rows,
        "amx_instructions": amx_instructions(bin_dir / "llama-bench"),
    }
    (bin_dir / BUILD_RECORD).write_text(json.dumps(record, indent=1) + "\n")
    return record


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m quantkit.doctor.build_check")
    parser.add_argument("what", choices=("wheel", "tools"))
    parser.add_argument("folder", type=Path)
    parser.add_argument("--cmake-args", default="")
    parser.add_argument("--cflags", default="")
    args = parser.parse_args(argv)
    check = check_wheel if args.what == "wheel" else check_tools
    try:
        record = check(args.folder, args.cmake_args, args.cflags)
    except QuantkitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    amx = record.get("amx_instructions")
    print(f"llama.cpp {args.what} self-test passed ({'no' if amx == 0 else amx} AMX instructions): {args.folder / BUILD_RECORD}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
