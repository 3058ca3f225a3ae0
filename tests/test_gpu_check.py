"""benchmarks/gpu_check.py stays ready for the first lent GPU: its dry run builds both recipes
(the demo and the random 1B, on cuda), plans them with GPU estimates for every stage and finds
its block in docs/gpu.md; the block it writes replaces only what is between the markers."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "gpu_check.py"


def load():
    import importlib.util

    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_dry_run_is_green_on_the_cpu(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--dry-run", "--work", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "demo: GPU estimates quantize" in proc.stdout and "random-1b: GPU estimates quantize" in proc.stdout
    assert proc.stdout.count("| not run |") == 2
    assert not (tmp_path / "random-1b").exists()  # a dry run builds no checkpoint
    import yaml

    demo = yaml.safe_load((tmp_path / "gpu-check-smollm2.yaml").read_text())
    assert demo["bench"]["device"] == "cuda"
    assert {a["device"] for a in demo["artifacts"] if "device" in a} == {"cuda"}


def test_verdicts_and_the_docs_block(tmp_path):
    gc = load()
    assert gc.verdict(10, None) == "not run"
    assert gc.verdict(10, 11) == "peak above the estimate"
    assert gc.verdict(10, 3) == "estimate over 2.5x the peak"
    assert gc.verdict(10, 6) == "ok"
    docs = tmp_path / "gpu.md"
    docs.write_text(f"before\n{gc.START}\nold\n{gc.END}\nafter\n")
    row = {"name": "demo", "estimate": {"quantize": 2 * gc.GiB, "bench": gc.GiB}, "peak": gc.GiB, "baseline": 0}
    row.update(exit=0, wall_s=60, verdict=gc.verdict(2 * gc.GiB, gc.GiB))
    gc.write_docs(gc.docs_block([row], "NVIDIA H100"), docs)
    text = docs.read_text()
    assert text.startswith("before\n") and text.endswith("after\n") and "old" not in text
    assert "| demo | 2.00 GiB | 1.00 GiB | 1.00 GiB | 0.00 GiB | 0.50 | 60 s | 0 | ok |" in text
