import json
import os
import subprocess
import sys

from click.testing import CliRunner

from quantkit.cli import COMMANDS, cli


def run_quantkit(*args, env=None, **kwargs):
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "quantkit", *args], capture_output=True, text=True,
                          env=full_env, **kwargs)


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
