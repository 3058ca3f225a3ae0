"""A crashed engine is named as a crash: wherever quantkit runs llama.cpp or a library in a child,
death by a signal says "<engine> crashed (SIGSEGV) while ...; the file itself was not judged" and
points at `quantkit doctor` - never "the converted file is unusable". Each test kills the real
child (llama.cpp's checks, its tools, the verification runtime, the engine smoke) with SIGSEGV."""

import shutil
import signal

import pytest
from crashing import SegfaultChild

from quantkit.core.crash import crash_error, crashed, signal_of
from quantkit.core.errors import EngineCrashed
from quantkit.hub.bundled import DEFAULT, bundled_gguf


def assert_crash_message(exc: pytest.ExceptionInfo, engine: str, action: str) -> None:
    text = str(exc.value)
    assert f"{engine} crashed (SIGSEGV) while {action}" in text, text
    assert "the file itself was not judged" in text and "quantkit doctor" in text, text
    assert "unusable" not in text


def test_signals_are_read_both_ways_and_only_faults_are_crashes():
    assert signal_of(-11) == signal.SIGSEGV and signal_of(139) == signal.SIGSEGV and signal_of(0) is None
    assert crashed(-11) == signal.SIGSEGV and crashed(-4) == signal.SIGILL and crashed(-6) == signal.SIGABRT
    assert crashed(-15) is None and crashed(-9) is None and crashed(1) is None  # a kill or an error is no crash
    error = crash_error("llama.cpp", "checking the GGUF file(s)", -11)
    assert error.message == "llama.cpp crashed (SIGSEGV) while checking the GGUF file(s); the file itself was not judged"
    assert "quantkit doctor" in error.hint


def test_gguf_check_child_killed_by_sigsegv_is_a_crash_not_a_bad_file(smollm2, tmp_path):
    from quantkit.quantization.gguf.checks import verify

    gguf = tmp_path / "smollm2-Q4_1.gguf"
    shutil.copy(bundled_gguf(DEFAULT), gguf)
    with SegfaultChild("quantkit.quantization.gguf.checks") as killer, pytest.raises(EngineCrashed) as exc:
        verify(smollm2, {"Q4_1": gguf}, smoke=False, n_threads=1)
    assert killer.killed
    assert_crash_message(exc, "llama.cpp", "checking the GGUF file(s)")
    assert gguf.is_file()  # the file is kept: nothing judged it


def test_a_llama_cpp_tool_killed_by_sigsegv_is_a_crash(tmp_path):
    from quantkit.quantization.gguf.binaries import quantize_file

    with SegfaultChild("llama-quantize") as killer, pytest.raises(EngineCrashed) as exc:
        quantize_file(bundled_gguf(DEFAULT), tmp_path / "out.gguf", "Q8_0", nthread=1, echo=False)
    assert killer.killed
    assert_crash_message(exc, "llama.cpp", "running llama-quantize")


def test_the_engine_smoke_names_a_crash_and_a_working_build_passes(tmp_path):
    from quantkit.doctor.smokes import outcome
    from quantkit.engines.llamacpp_build import smoke

    answer = smoke(bundled_gguf(DEFAULT), threads=1)
    assert "Paris" in answer["text"] and answer["system_info"]
    with SegfaultChild("quantkit.engines.llamacpp_build") as killer:
        result = outcome(lambda: smoke(bundled_gguf(DEFAULT), threads=1))
    assert killer.killed and result["status"] == "crash"
    assert result["message"].startswith("llama.cpp (llama-cpp-python) crashed (SIGSEGV) while decoding")


@pytest.mark.slow
def test_verification_child_killed_by_sigsegv_is_a_crash(tiny_llama, tmp_path):
    from quantkit.api import quantize

    out = tmp_path / "tiny-nf4"
    with SegfaultChild("verify_runtime.py") as killer, pytest.raises(EngineCrashed) as exc:
        quantize(str(tiny_llama), "nf4", out)
    assert killer.killed
    assert_crash_message(exc, "plain transformers", "verifying the artifact against its base")
    assert not out.exists()  # nothing finished-looking is left


def test_an_in_process_engine_smokes_the_build_in_a_child_before_its_first_load(tmp_path, monkeypatch):
    """bench, chat and serve load llama.cpp in their own process: a faulting build is reported as a
    crash by the child smoke before the first load, then remembered as good once it passes."""
    from quantkit.engines import EngineOptions, load_engine

    monkeypatch.setenv("QUANTKIT_HOME", str(tmp_path / "home"))
    options = EngineOptions(device="cpu", threads=1, n_ctx=256)
    with SegfaultChild("quantkit.engines.llamacpp_build") as killer, pytest.raises(EngineCrashed) as exc:
        load_engine(bundled_gguf(DEFAULT), options)
    assert killer.killed
    assert_crash_message(exc, "llama.cpp (llama-cpp-python)", "decoding")
    engine = load_engine(bundled_gguf(DEFAULT), options)
    engine.close()
    assert len(list((tmp_path / "home" / "selftest").glob("llama-cpp-python-*.json"))) == 1
