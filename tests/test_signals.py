"""A run killed at its most fragile moments - SIGKILL or SIGTERM during the GGUF conversion, during
AWQ calibration, during a recipe's bench - leaves nothing that looks finished, no orphan child
process (the converter), and the same command run again completes."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from quantkit.core.atomic import PARTIAL_MARK
from quantkit.core.manifest import MANIFEST


def start(*args: str) -> subprocess.Popen:
    """`quantkit ARGS` with its stderr readable line by line (tqdm's \\r updates split too)."""
    return subprocess.Popen(
        [sys.executable, "-m", "quantkit", *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, errors="replace"
    )


def wait_for(proc: subprocess.Popen, marker: str, timeout: float = 300) -> list[str]:
    """Read the run's stderr until a line holds ``marker``; the lines read."""
    seen, deadline = [], time.time() + timeout
    for line in proc.stderr:
        seen.append(line)
        if marker in line:
            return seen
        assert time.time() < deadline, f"no {marker!r} within {timeout}s"
    raise AssertionError(f"the run ended (exit {proc.wait()}) before {marker!r}:\n" + "".join(seen[-30:]))


def children_running(proc: subprocess.Popen, pattern: str, timeout: float = 120) -> list[psutil.Process]:
    """The run's child processes whose command line holds ``pattern``, once there is one."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        found = [c for c in psutil.Process(proc.pid).children(recursive=True) if any(pattern in part for part in safe_cmdline(c))]
        if found:
            return found
        assert proc.poll() is None, "the run ended before its child started"
        time.sleep(0.05)
    raise AssertionError(f"no child process {pattern!r} within {timeout}s")


def safe_cmdline(process: psutil.Process) -> list[str]:
    try:
        return process.cmdline()
    except psutil.Error:
        return []


def assert_gone(processes: list[psutil.Process], timeout: float = 10) -> None:
    """The children die with the run (not whenever they next write to a dead pipe)."""
    _, alive = psutil.wait_procs(processes, timeout=timeout)
    for orphan in alive:
        orphan.kill()
    assert not alive, f"orphans left running: {[safe_cmdline(p) for p in alive]}"


def kill(proc: subprocess.Popen, sig: int) -> int:
    proc.send_signal(sig)  # the run itself only, as `kill PID` does: its children are its own business
    code = proc.wait(timeout=120)
    proc.stderr.close()
    return code


def only_staging_left(folder: Path) -> None:
    assert all(PARTIAL_MARK in p.name for p in folder.iterdir()), sorted(p.name for p in folder.iterdir())


# --- GGUF conversion -----------------------------------------------------------------------------


def gguf_args(model: Path, out: Path) -> list[str]:
    return ["quantize", str(model), "--method", "gguf", "--gguf-type", "Q8_0", "-o", str(out)]


@pytest.mark.slow
def test_sigkill_during_gguf_conversion_then_rerun(tiny_llama, tmp_path):
    out = tmp_path / "out"
    proc = start(*gguf_args(tiny_llama, out))
    converters = children_running(proc, "convert_hf_to_gguf.py")
    assert kill(proc, signal.SIGKILL) == -signal.SIGKILL
    assert_gone(converters)
    assert not out.exists()
    only_staging_left(tmp_path)
    rerun = subprocess.run(
        [sys.executable, "-m", "quantkit", *gguf_args(tiny_llama, out)], capture_output=True, text=True, timeout=900
    )
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # the killed run's staging folder was swept
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["verification"]["files"]["Q8_0"]["tokenizer_parity"]


@pytest.mark.slow
def test_sigterm_during_gguf_conversion_leaves_nothing(tiny_llama, tmp_path):
    proc = start(*gguf_args(tiny_llama, tmp_path / "out"))
    converters = children_running(proc, "convert_hf_to_gguf.py")
    assert kill(proc, signal.SIGTERM) == 143
    assert_gone(converters)
    assert list(tmp_path.iterdir()) == []


# --- AWQ calibration -----------------------------------------------------------------------------


def awq_args(model: Path, out: Path, calib: Path) -> list[str]:
    return [
        "quantize",
        str(model),
        "--method",
        "awq",
        "--calib",
        str(calib),
        "--calib-samples",
        "4",
        "--calib-seq-len",
        "64",
        "-o",
        str(out),
    ]


def unique_calibration(folder: Path) -> Path:
    """A calibration text no earlier run used, so nothing is reused from the calibration cache."""
    nonce = os.urandom(6).hex()
    path = folder.parent / f"calib-{nonce}.txt"
    path.write_text(
        "\n\n".join(
            f"Paragraph {i} ({nonce}): a fox runs through a field of wheat at dawn, and the "
            "farmer counts his sheep twice before the rain."
            for i in range(24)
        )
    )
    return path


@pytest.mark.slow
def test_sigkill_during_awq_calibration_then_rerun(tiny_llama, tmp_path):
    folder = tmp_path / "runs"
    folder.mkdir()
    calib, out = unique_calibration(folder), folder / "out"
    proc = start(*awq_args(tiny_llama, out, calib))
    wait_for(proc, "Grid search for")  # llm-compressor's AWQ scale search: calibration under way
    assert kill(proc, signal.SIGKILL) == -signal.SIGKILL
    assert not out.exists()
    only_staging_left(folder)
    rerun = subprocess.run(
        [sys.executable, "-m", "quantkit", *awq_args(tiny_llama, out, calib)], capture_output=True, text=True, timeout=900
    )
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert [p.name for p in folder.iterdir()] == ["out"]
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["method"] == "awq" and manifest["verification"]["top1"] >= manifest["verification"]["top1_min"]


@pytest.mark.slow
def test_sigterm_during_awq_calibration_leaves_nothing(tiny_llama, tmp_path):
    folder = tmp_path / "runs"
    folder.mkdir()
    proc = start(*awq_args(tiny_llama, folder / "out", unique_calibration(folder)))
    wait_for(proc, "Grid search for")
    assert kill(proc, signal.SIGTERM) == 143
    assert list(folder.iterdir()) == []


# --- a recipe's bench ----------------------------------------------------------------------------


@pytest.mark.slow
def test_sigkill_during_a_recipes_bench_then_rerun(tiny_llama, tmp_path):
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(
        f"name: tiny\nmodel:\n  id: {tiny_llama}\nbench:\n  gen_tokens: 4\n  prompt_tokens: 8\n"
        "  repetitions: 1\n  threads: 1\n  eval_tokens: 64\n  device: cpu\ngates:\n  smoke: false\n"
        "artifacts:\n  - name: nf4\n    method: nf4\n    device: cpu\n"
    )
    out = tmp_path / "out"
    proc = start("run", str(recipe), "--out", str(out))
    wait_for(proc, "[bench nf4] speed")
    time.sleep(1)  # well inside the bench: loading, timing
    assert kill(proc, signal.SIGKILL) == -signal.SIGKILL
    assert (out / "artifacts" / "nf4" / MANIFEST).is_file()  # the quantize stage had finished
    for unfinished in ("bench/nf4.json", "stages/nf4.bench.json", "results.json", "report.md"):
        assert not (out / unfinished).exists(), unfinished
    assert not [p for p in out.rglob("*") if p.name.startswith(".") and p.is_file()]  # no half-written JSON
    rerun = subprocess.run(
        [sys.executable, "-m", "quantkit", "run", str(recipe), "--out", str(out)], capture_output=True, text=True, timeout=900
    )
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "[quantize nf4] skipped (up to date" in rerun.stderr and "[bench nf4] done" in rerun.stderr
    results = json.loads((out / "results.json").read_text())
    # the smoke gate is off in this recipe: the artifact is unvalidated, not passed (the run still completes)
    assert results["verdict"] == "unvalidated" and not results["passed"]
    assert (out / "bench" / "nf4.json").is_file() and (out / "report.md").is_file()


# --- every stage that writes, every method ---------------------------------------------------------

FEW = ["--calib-samples", "4", "--calib-seq-len", "64"]
# (method, its flags, the child process whose start marks the stage to kill in). Verification is
# every method's last step before the rename: the most finished-looking moment to die in.
KILL_POINTS = {
    "awq-verification": ("awq", FEW, "verify_runtime.py"),
    "gptq-verification": ("gptq", ["--group-size", "64", *FEW], "verify_runtime.py"),
    "w8a8-verification": ("w8a8", FEW, "verify_runtime.py"),
    "fp8-verification": ("fp8", [], "verify_runtime.py"),
    "nf4-verification": ("nf4", [], "verify_runtime.py"),
    "int8-verification": ("int8", [], "verify_runtime.py"),
    "gguf-llama-imatrix": ("gguf", ["--gguf-type", "Q4_K_M", *FEW], "llama-imatrix"),
    "gguf-llama-quantize": ("gguf", ["--gguf-type", "Q4_K_M", *FEW], "llama-quantize"),
    "gguf-checks": ("gguf", ["--gguf-type", "Q8_0"], "quantkit.quantization.gguf.checks"),
    "gguf-verification": ("gguf", ["--gguf-type", "Q8_0"], "verify_runtime.py"),
}


def test_every_method_has_a_kill_point():
    """A new method joins the kill tests (the registry is the list)."""
    from quantkit.quantization.registry import METHODS

    assert {method for method, _, _ in KILL_POINTS.values()} == set(METHODS)


@pytest.mark.slow
@pytest.mark.parametrize("point", list(KILL_POINTS))
def test_sigkill_in_each_writing_stage_leaves_nothing_finished_then_rerun(point, tiny_llama, tmp_path):
    method, flags, child = KILL_POINTS[point]
    folder = tmp_path / "runs"
    folder.mkdir()
    out = folder / "out"
    args = ["quantize", str(tiny_llama), "--method", method, *flags, "-o", str(out)]
    proc = start(*args)
    children = children_running(proc, child, timeout=900)
    assert kill(proc, signal.SIGKILL) == -signal.SIGKILL
    assert_gone(children)
    assert not out.exists()
    only_staging_left(folder)
    rerun = subprocess.run([sys.executable, "-m", "quantkit", *args], capture_output=True, text=True, timeout=1200)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert [p.name for p in folder.iterdir()] == ["out"]  # the killed run's staging folder was swept
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["method"] == method and manifest["verification"]
