"""What ``quantize`` does whatever the method: preflight and bad inputs. Each bad input fails with
one line on stderr (through the real CLI entry point) and leaves nothing behind."""

import json
import signal
import subprocess
import sys
import time

import pytest

from quantkit.cli import main
from quantkit.core import preflight
from quantkit.core.atomic import PARTIAL_MARK
from quantkit.core.errors import InputError, PreflightError
from quantkit.quantization.base import copy_support_files
from quantkit.quantization.quantize import quantize
from quantkit.quantization.registry import get_method, make_options

# A Llama-3.1-405B-shaped config.json: ~400B parameters, far beyond this machine's RAM.
HUGE = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 16384,
    "intermediate_size": 53248,
    "num_hidden_layers": 126,
    "num_attention_heads": 128,
    "num_key_value_heads": 8,
    "vocab_size": 128256,
    "torch_dtype": "bfloat16",
}


def fake_model(folder, config: dict | None):
    folder.mkdir()
    if config is not None:
        (folder / "config.json").write_text(json.dumps(config))
    return folder


def fails_in_one_line(capsys, root, *args) -> str:
    """Run the CLI in-process; assert a non-zero exit, one stderr line, and no new files in ``root``."""
    before = sorted(root.rglob("*"))
    with pytest.raises(SystemExit) as exc:
        main(["quantize", *map(str, args)])
    err = capsys.readouterr().err
    assert exc.value.code != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    assert sorted(root.rglob("*")) == before
    return lines[0]


def test_unknown_method(tiny_llama, tmp_path, capsys):
    with pytest.raises(InputError, match="unknown method 'nope'.*nf4"):
        quantize(tiny_llama, "nope", tmp_path / "out")
    with pytest.raises(SystemExit) as exc:  # click rejects it before quantkit runs (usage error)
        main(["quantize", str(tiny_llama), "--method", "nope", "-o", str(tmp_path / "out")])
    assert exc.value.code == 2 and "nope" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_existing_output_needs_overwrite(tiny_llama, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    line = fails_in_one_line(capsys, tmp_path, tiny_llama, "--method", "nf4", "-o", out)
    assert "already exists" in line and "--overwrite" in line
    assert (out / "keep.txt").read_text() == "mine"
    quantize(tiny_llama, "nf4", out, overwrite=True)  # replaced as a whole, atomically
    assert not (out / "keep.txt").exists() and (out / "quantkit.json").is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_folder_without_config(tmp_path, capsys):
    model = fake_model(tmp_path / "empty", None)
    line = fails_in_one_line(capsys, tmp_path, model, "--method", "int8", "-o", tmp_path / "out")
    assert "config.json" in line


def test_unsupported_architecture(tmp_path, capsys):
    model = fake_model(tmp_path / "bert", {"architectures": ["BertForMaskedLM"], "model_type": "bert"})
    line = fails_in_one_line(capsys, tmp_path, model, "--method", "nf4", "-o", tmp_path / "out")
    assert "BertForMaskedLM" in line and "causal" in line


def test_causal_lm_reasons():
    assert preflight.causal_lm_reason({"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2"}) is None
    assert "no architecture" in preflight.causal_lm_reason({"model_type": "llama"})
    unknown = {"architectures": ["MadeUpForCausalLM"], "model_type": "made_up"}
    assert "no implementation" in preflight.causal_lm_reason(unknown)
    custom = {**unknown, "auto_map": {"AutoModelForCausalLM": "modeling_made_up.MadeUpForCausalLM"}}
    assert preflight.causal_lm_reason(custom) is None
    with pytest.raises(PreflightError, match="own code"):
        preflight.require_trusted_code(custom, trust_remote_code=False)
    preflight.require_trusted_code(custom, trust_remote_code=True)


@pytest.mark.parametrize("method, bits", [("nf4", 3), ("nf4", 8), ("int8", 4)])
def test_bits_the_method_lacks(tiny_llama, tmp_path, capsys, method, bits):
    line = fails_in_one_line(capsys, tmp_path, tiny_llama, "--method", method, "--bits", bits, "-o", tmp_path / "out")
    assert f"--bits {bits} is not one of" in line


@pytest.mark.parametrize(
    "method, flags, flag, users",
    [
        ("nf4", ["--group-size", 64], "--group-size", "awq, gptq"),
        ("gguf", ["--group-size", 64], "--group-size", "awq, gptq"),  # was silently ignored
        ("gguf", ["--ignore", "lm_head"], "--ignore", "awq, gptq, w8a8, fp8, nf4, int8"),
        ("awq", ["--gguf-type", "Q8_0"], "--gguf-type", "gguf"),
        ("int8", ["--calib-samples", 8], "--calib-samples", "awq, gptq, w8a8, gguf"),
    ],
)
def test_option_the_method_does_not_use(tiny_llama, tmp_path, capsys, method, flags, flag, users):
    """Derived from each method's settings declaration: a flag the method does not read is an
    error naming the flag and the methods that use it, never silently ignored."""
    line = fails_in_one_line(capsys, tmp_path, tiny_llama, "--method", method, *flags, "-o", tmp_path / "out")
    assert f"{flag} is not used by --method {method}" in line and f"it is a setting of {users}" in line


def test_the_api_refuses_a_setting_the_method_does_not_use(tiny_llama, tmp_path):
    import quantkit as qk

    with pytest.raises(InputError, match="method gguf does not use the setting 'group_size'"):
        qk.quantize(tiny_llama, "gguf", tmp_path / "out", group_size=64)
    assert not (tmp_path / "out").exists()


def test_not_enough_ram(tmp_path, capsys):
    model = fake_model(tmp_path / "huge", HUGE)
    line = fails_in_one_line(capsys, tmp_path, model, "--method", "nf4", "-o", tmp_path / "out")
    assert "RAM" in line and "--force" in line
    # --force skips the check (the estimate is still returned): nf4 loads ~400B params at 16 bits.
    nf4 = get_method("nf4")
    forced, plain = make_options("nf4", {"device": "cpu", "force": True}), make_options("nf4", {"device": "cpu"})
    need = preflight.check_quantize_memory(HUGE, "nf4", nf4.footprint(forced), forced)
    assert need.ram_bytes > 2e11
    with pytest.raises(PreflightError):
        preflight.check_quantize_memory(HUGE, "nf4", nf4.footprint(plain), plain)


def test_device_resolution_and_cuda_refusal(tiny_llama, tmp_path, capsys):
    import torch

    has_cuda = torch.cuda.is_available()
    assert preflight.resolve_device("auto") == ("cuda" if has_cuda else "cpu")
    assert preflight.resolve_device("cpu") == "cpu"
    with pytest.raises(InputError):
        preflight.check_device("tpu")
    if has_cuda:
        assert preflight.resolve_device("cuda") == "cuda"
    else:
        line = fails_in_one_line(capsys, tmp_path, tiny_llama, "--method", "int8", "--device", "cuda", "-o", tmp_path / "out")
        assert "CUDA" in line


def test_copy_support_files_keeps_what_the_method_wrote(tiny_qwen2, tmp_path):
    (tmp_path / "generation_config.json").write_text("{}")
    copied = copy_support_files(tiny_qwen2, tmp_path)
    assert {"tokenizer.json", "tokenizer_config.json", "chat_template.jinja"} <= set(copied)
    assert "generation_config.json" not in copied and (tmp_path / "generation_config.json").read_text() == "{}"
    assert (tmp_path / "tokenizer.json").read_bytes() == (tiny_qwen2 / "tokenizer.json").read_bytes()


def start_quantize_until_staging(model, tmp_path):
    """A `quantkit quantize` subprocess, returned once its staging folder exists."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "quantkit", "quantize", str(model), "--method", "nf4", "-o", str(tmp_path / "out")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 120
    while time.time() < deadline and not list(tmp_path.glob(f".out{PARTIAL_MARK}*")):
        assert proc.poll() is None, "quantize finished before it could be stopped"
        time.sleep(0.05)
    return proc


def test_killed_run_leaves_no_finished_looking_folder(tiny_llama, tmp_path):
    out = tmp_path / "out"
    proc = start_quantize_until_staging(tiny_llama, tmp_path)
    proc.send_signal(signal.SIGKILL)  # mid-run: the staging folder exists, the artifact does not
    proc.wait()
    assert not out.exists()
    assert all(PARTIAL_MARK in p.name for p in tmp_path.iterdir())
    quantize(tiny_llama, "nf4", out)  # a rerun completes and sweeps the stale staging folder
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    assert (out / "quantkit.json").is_file()


def test_sigterm_mid_run_removes_the_staging_folder(tiny_llama, tmp_path):
    """A plain `kill` unwinds like Ctrl-C: nothing is left, not even a hidden staging folder."""
    proc = start_quantize_until_staging(tiny_llama, tmp_path)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 143
    assert list(tmp_path.iterdir()) == []
