"""`quantkit doctor` end to end (the facts a bug report needs, each engine smoked in a child), and
the llama.cpp build as `make install` leaves it: self-tested before it was stamped, its flags on
record, no AMX tile instructions unless asked for, and a CUDA build without CUDA refused."""

import json
import re
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

from quantkit.doctor.build_check import AMX_OPCODES, BuildCheckFailed, amx_instructions, check_tools, check_wheel
from quantkit.engines.llamacpp_build import build_record, cpu_features, library_file
from quantkit.engines.llamacpp_tools import tools_bin

REPO = Path(__file__).resolve().parents[1]


def cpuinfo_flags() -> set[str]:
    line = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
    return set(line.split(":", 1)[1].split())


def wheel_dir() -> Path:
    url = json.loads(metadata.distribution("llama-cpp-python").read_text("direct_url.json"))["url"]
    return Path(url.removeprefix("file://")).parent


def test_doctor_reports_the_machine_the_build_and_smokes_each_engine():
    proc = subprocess.run([sys.executable, "-m", "quantkit", "doctor", "--json"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    flags = cpuinfo_flags()
    system = report["system"]
    assert system["amx"] == sorted(f for f in flags if f.startswith("amx"))  # names the CPU's AMX (none here is a fact too)
    assert system["avx512"] == sorted(f for f in flags if f.startswith("avx512")) and system["avx2"] == ("avx2" in flags)
    assert system["cores"] >= 1 and system["ram_gib"] > 1
    llama = report["llama.cpp"]
    assert "-mno-amx-tile" in llama["cflags"] and llama["amx_instructions"] == 0  # the wheel's build flags
    assert "AVX" in llama["system_info"] and llama["tools"] and len(llama["tools_commit"]) == 40
    assert report["libraries"]["torch"].startswith("2.13.0") and report["torch"]["cuda_available"] is False
    assert report["bitsandbytes"]["backend"] == "CPU"
    assert {name: r["status"] for name, r in report["smoke"].items()} == {
        "llama-cpp-python": "pass",
        "llama.cpp tools": "pass",
        "transformers": "pass",
    }
    assert "Paris" in report["smoke"]["llama-cpp-python"]["text"]


def test_doctor_markdown_is_a_block_for_an_issue():
    proc = subprocess.run([sys.executable, "-m", "quantkit", "doctor", "--no-smoke"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    assert text.startswith("### quantkit doctor") and "#### system" in text and "#### llama.cpp" in text
    assert re.search(r"^- amx: ", text, re.M) and re.search(r"^- cflags: .*-mno-amx-tile", text, re.M)
    assert "#### smoke" not in text


def test_the_installed_build_holds_no_amx_tile_instructions():
    """Read the machine code (objdump), not the flags: ldtilecfg/tdp* must not be there unless the
    build asked for AMX (LLAMA_CPU_CFLAGS without -mno-amx-*)."""
    record = build_record()
    tools_record = json.loads((tools_bin() / "BUILD.json").read_text())
    assert "-mno-amx-tile" in record["cflags"] and "-mno-amx-tile" in tools_record["cflags"]
    assert amx_instructions(library_file()) == 0
    assert amx_instructions(tools_bin() / "llama-bench") == 0
    assert amx_instructions(tools_bin() / "llama-server") == 0


def test_the_amx_detector_finds_tile_instructions(tmp_path):
    """The same reader on an object built with AMX: it would have caught the build that segfaults."""
    source = tmp_path / "amx.c"
    source.write_text(
        "#include <immintrin.h>\n"
        "void configure(const void *cfg) { _tile_loadconfig(cfg); _tile_zero(0); _tile_dpbssd(0, 1, 2); _tile_release(); }\n"
    )
    built = subprocess.run(["gcc", "-O2", "-mamx-tile", "-mamx-int8", "-c", str(source), "-o", str(tmp_path / "amx.o")])
    assert built.returncode == 0
    assert amx_instructions(tmp_path / "amx.o") >= 3
    assert AMX_OPCODES.search("ldtilecfg (%rdi)") and not AMX_OPCODES.search("vpdpbusd %zmm1,%zmm2,%zmm3")


def test_make_install_self_tested_the_build_before_stamping_it():
    built = json.loads((wheel_dir() / "BUILD.json").read_text())
    assert (wheel_dir() / ".built").stat().st_mtime >= (wheel_dir() / "BUILD.json").stat().st_mtime
    assert built["smoke"]["text"] and built["cpu_features"] == cpu_features()
    tools = json.loads((tools_bin() / "BUILD.json").read_text())
    assert {row["test"] for row in tools["llama_bench"]} == {"pp8", "tg4"}


def test_a_cuda_build_without_libggml_cuda_is_refused(tmp_path):
    """pip's wheel cache handing back a CPU wheel for a CUDA build: refused before the stamp."""
    for wheel in wheel_dir().glob("llama_cpp_python-*.whl"):
        shutil.copy(wheel, tmp_path / wheel.name)
    with pytest.raises(BuildCheckFailed, match="holds no libggml-cuda"):
        check_wheel(tmp_path, "-DLLAVA_BUILD=OFF -DGGML_CUDA=on", "")
    proc = subprocess.run(
        [sys.executable, "-m", "quantkit.doctor.build_check", "wheel", str(tmp_path), "--cmake-args=-DGGML_CUDA=ON"],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1 and "libggml-cuda" in proc.stderr
    assert not (tmp_path / "BUILD.json").exists()


def test_a_tool_build_that_crashes_is_not_stamped_and_says_what_to_change(tmp_path):
    """A llama-bench that dies by SIGSEGV (as the AMX build did): one line, with the flag to change."""
    fake = tmp_path / "llama-bench"
    fake.write_text("#!/bin/sh\nkill -SEGV $$\n")
    fake.chmod(0o755)
    with pytest.raises(BuildCheckFailed) as exc:
        check_tools(tmp_path, "-DGGML_NATIVE=ON", "")
    assert "crashed (SIGSEGV)" in str(exc.value) and "LLAMA_CPU_CFLAGS" in str(exc.value)
    assert not (tmp_path / "BUILD.json").exists()


def test_builds_are_keyed_by_their_flags_and_bypass_pips_cache():
    def dry_run(*args: str) -> str:
        return subprocess.run(["make", "-n", "-B", "wheels", *args], capture_output=True, text=True, cwd=REPO).stdout

    cpu, cuda = dry_run(), dry_run("LLAMA_CMAKE_ARGS=-DGGML_CUDA=on")
    folder = re.compile(r"llama-cpp-python-[0-9.]+-([0-9a-f]{12})")
    assert folder.search(cpu)[1] != folder.search(cuda)[1]
    assert folder.search(cpu)[1] != folder.search(dry_run("LLAMA_CPU_CFLAGS="))[1]
    assert "--no-cache-dir" in cpu and 'CFLAGS="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"' in cpu
    assert "quantkit.doctor.build_check wheel" in cpu
