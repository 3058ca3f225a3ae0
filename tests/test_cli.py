import json
import os
import re
import subprocess
import sys

import pytest
from click.testing import CliRunner

from quantkit.cli import COMMANDS, cli
from quantkit.quantization.registry import METHODS


def run_quantkit(*args, env=None, **kwargs):
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "quantkit", *args], capture_output=True, text=True, env=full_env, **kwargs)


def test_help_lists_every_command_and_imports_nothing_heavy():
    code = (
        "import sys; from quantkit.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('torch', 'transformers', 'llama_cpp', 'bitsandbytes', 'llmcompressor') if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "HEAVY []" in out
    for name in COMMANDS:
        assert name in out
    assert "Examples:" in out


def test_every_command_has_help_and_examples():
    runner = CliRunner()
    for name in COMMANDS:
        result = runner.invoke(cli, [name, "--help"])
        assert result.exit_code == 0, result.output
        assert "Examples:" in result.output, name


def test_library_error_is_one_line_and_nonzero(tmp_path):
    result = run_quantkit("inspect", str(tmp_path / "missing" / "x"))
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr


def test_debug_shows_traceback(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = run_quantkit("inspect", str(empty), env={"QUANTKIT_DEBUG": "1"})
    assert result.returncode != 0
    assert "Traceback" in result.stderr and "config.json" in result.stderr


def test_usage_error_exits_2():
    result = run_quantkit("quantize", "x", "--method", "nope")
    assert result.returncode == 2
    assert "nope" in result.stderr


def test_inspect_json_of_a_tiny_model(tiny_llama):
    result = run_quantkit("inspect", str(tiny_llama), "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["model"]["architecture"] == "LlamaForCausalLM"
    assert set(data["model"]["support"]) >= {"awq", "nf4", "int8", "gguf"}


def test_inspect_reads_a_gguf_files_own_metadata():
    """`inspect model.gguf` reads the file (no "expected a model folder"): architecture, real
    parameter count, file type, context, chat template, and the engines that run it."""
    from quantkit.hub.bundled import bundled_gguf

    gguf = bundled_gguf("bundled:smollm2-135m-instruct")
    result = run_quantkit("inspect", str(gguf), "--json")
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert (info["architecture"], info["file_type"], info["context_length"]) == ("llama", "Q4_1", 8192)
    assert info["n_params"] == 134_515_008 and 4.5 < info["bits_per_weight"] < 6.5
    assert info["chat_template"] is True and info["engines"]["llama.cpp"] is None
    table = run_quantkit("inspect", str(gguf))
    assert table.returncode == 0 and "engine llama.cpp" in table.stderr and "Q4_1" in table.stderr


def write_config(folder, config) -> str:
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config))
    return str(folder)


def test_inspect_answers_per_method_from_config_alone(tmp_path):
    """A folder with only config.json: Gemma 3 text is supported by every method but W8A8 (whose
    SmoothQuant artifact breaks on it: docs/architectures.md); a mixture-of-experts model is refused
    for AWQ with the reason and the fix, not for the others."""
    sys.path.insert(0, os.path.dirname(__file__))
    from models import arch_config

    gemma = arch_config("gemma3_text", pad_token_id=0, bos_token_id=1, eos_token_id=2).to_dict()
    result = run_quantkit("inspect", write_config(tmp_path / "gemma3", gemma), "--json")
    assert result.returncode == 0, result.stderr
    support = json.loads(result.stdout)["model"]["support"]
    assert {name for name, why in support.items() if why is None} == set(METHODS) - {"w8a8"}
    assert "W8A8 is not supported for Gemma3ForCausalLM" in support["w8a8"] and "use --method gptq" in support["w8a8"]
    moe = arch_config("qwen3_moe", pad_token_id=0, bos_token_id=1, eos_token_id=2).to_dict()
    table = run_quantkit("inspect", write_config(tmp_path / "moe", moe))
    assert table.returncode == 0, table.stderr
    awq_line = " ".join(table.stderr.split())  # rich wraps long verdicts
    assert "mixture-of-experts" in awq_line and "use --method gguf or nf4" in awq_line
    for method in ("nf4", "int8", "gguf"):
        assert re.search(rf"method {method} supported", awq_line), awq_line


def test_library_messages_name_parameters_and_the_cli_says_flags(tmp_path):
    """Library errors speak the Python API (`overwrite=True`); the CLI prints them as flags."""
    from quantkit.cli import as_flags
    from quantkit.core.atomic import check_output
    from quantkit.core.errors import InputError

    (tmp_path / "out").mkdir()
    with pytest.raises(InputError) as info:
        check_output(tmp_path / "out", overwrite=False)
    assert "`overwrite=True`" in str(info.value)
    assert as_flags(str(info.value)).endswith("(pass --overwrite to replace it)")
    assert as_flags("use `device='cpu'`, `calib_samples` or `model=NAME`") == "use --device cpu, --calib-samples or --model NAME"
    assert (
        as_flags("see `python convert_hf_to_gguf.py --print-supported-models`")
        == "see `python convert_hf_to_gguf.py --print-supported-models`"
    )
