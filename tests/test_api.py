"""The public Python API used as a user would: `import quantkit as qk`, then plain calls."""

import subprocess
import sys

import pytest

import quantkit as qk
from quantkit.core.errors import InputError


def test_import_is_light_and_names_are_functions():
    code = (
        "import sys, quantkit as qk, quantkit.quantization.quantize, quantkit.benchmark.bench; "
        "assert callable(qk.quantize) and callable(qk.bench), (qk.quantize, qk.bench); "
        "assert 'torch' not in sys.modules; print(sorted(qk.__all__))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == str(sorted(["__version__", "bench", "download", "load", "quantize", "run"]))


def test_quantize_bench_load_on_a_tiny_model(tiny_llama, tmp_path):
    art = qk.quantize(tiny_llama, "int8", tmp_path / "tiny-int8", device="cpu")
    assert (art / "quantkit.json").is_file()
    result = qk.bench(art, prompt_tokens=16, gen_tokens=4, repetitions=1, smoke=False, bandwidth=False)
    assert result.method == "int8" and result.decode.mean > 0
    assert result.quality is not None and result.quality["tokens_scored"] > 0  # base from quantkit.json
    with qk.load(art, device="cpu") as llm:
        pieces = list(llm.stream("Hello", max_tokens=5))
    assert 0 < len(pieces) <= 5


def test_unknown_parameter_is_one_clear_error(tiny_llama, tmp_path):
    with pytest.raises(InputError, match="awq has no setting 'group_sizes' .did you mean 'group_size'"):
        qk.quantize(tiny_llama, "awq", tmp_path / "x", group_sizes=64)
    with pytest.raises(InputError, match="bench has no setting 'tokens'"):
        qk.bench(tiny_llama, tokens=3)
    with pytest.raises(InputError, match="bench: repetitions must be at least 1"):
        qk.bench(tiny_llama, repetitions=0)


def test_run_dry_run_plans_a_shipped_recipe(tmp_path):
    summary = qk.run("smollm2-135m-instruct", tmp_path / "run", dry_run=True)
    assert summary.plan and summary.exit_code == 0
