"""One output channel (quantkit.core.events): the Python API prints nothing unless asked, a caller
captures its reports, and the CLI renders them (stage lines on the terminal, messages on stderr)."""

import logging
import subprocess
import sys

from quantkit.core import events


def test_the_api_prints_nothing_and_a_caller_captures_its_reports(tiny_llama, tmp_path, capfd, monkeypatch):
    import quantkit as qk
    from quantkit.pipeline import run as pipeline

    artifact = qk.quantize(tiny_llama, "int8", tmp_path / "int8")
    assert capfd.readouterr() == ("", "")
    reports: list[events.Event] = []
    with events.listen(reports.append):
        qk.bench(
            artifact,
            prompt_tokens=8,
            gen_tokens=2,
            repetitions=1,
            warmup=0,
            threads=1,
            device="cpu",
            smoke=False,
            quality=False,
            bandwidth=False,
        )
    assert capfd.readouterr() == ("", "")  # a listener is not the terminal
    assert [e.step for e in reports if e.stage == "bench"] == ["load", "speed"]
    monkeypatch.setattr(pipeline, "bench_one", lambda target, base, recipe: {"bits": 8, "failures": [], "passed": True})
    lines: list[str] = []
    qk.run(recipe(tmp_path, tiny_llama), tmp_path / "run", echo=lines.append)
    out, err = capfd.readouterr()  # (the libraries' own output goes to the run's log)
    assert out == "" and "[quantize int8]" not in err and "verifying" not in err
    assert lines[0].startswith("[run] tiny: library output goes to") and "[quantize int8] done in" in "\n".join(lines)


def test_a_gguf_export_through_the_api_prints_nothing(tiny_llama, tmp_path, capfd):
    """The converter's and llama.cpp's own output and the checking child's lines come as events."""
    import quantkit as qk

    reports: list[events.Event] = []
    with events.listen(reports.append):
        qk.quantize(tiny_llama, "gguf", tmp_path / "gguf", gguf_types=["F16"])
    assert capfd.readouterr() == ("", "")
    messages = [e.message for e in reports if e.logger != events.TOOLS]
    assert any(m.startswith("checking tiny-llama-F16.gguf: token parity") for m in messages)  # from the child
    assert any("hf-to-gguf" in e.message for e in reports if e.logger == events.TOOLS)  # the converter's lines


def recipe(tmp_path, model) -> str:
    file = tmp_path / "tiny.yaml"
    file.write_text(f"name: tiny\nmodel:\n  id: {model}\ngates:\n  smoke: false\nartifacts:\n  - name: int8\n    method: int8\n")
    return str(file)


def test_listen_is_scoped_and_leaves_the_logger_as_it_was():
    root = logging.getLogger(events.ROOT)
    level, handlers = root.level, list(root.handlers)
    seen = []
    with events.listen(seen.append):
        events.stage(events.logger("run"), "run", "[x] one")
        events.logger(__name__).warning("careful")
    events.stage(events.logger("run"), "run", "[x] after")
    assert [(e.message, e.stage, e.level) for e in seen] == [("[x] one", "run", logging.INFO), ("careful", None, logging.WARNING)]
    assert root.level == level and root.handlers == handlers


CLI = r"""
import sys
from quantkit.cli.render_events import install
from quantkit.core import events
install()
log = events.logger("quantkit.quantization.demo")
events.stage(events.logger("run"), "run", "[quantize a] done in 1s")
events.progress(log, "bench", "load")
log.info("checking a.gguf")
log.warning("the smoke chat did not stop")
events.tool_output("llama_model_quantize: done\n")
"""


def test_the_cli_renders_stage_lines_messages_and_tool_output():
    proc = subprocess.run([sys.executable, "-c", CLI], capture_output=True, text=True, check=True)
    assert proc.stdout == ""
    assert proc.stderr.splitlines() == [
        "[quantize a] done in 1s",
        "quantkit: checking a.gguf",
        "quantkit: warning: the smoke chat did not stop",
        "llama_model_quantize: done",
    ]


def test_a_cli_command_leaves_the_api_silent_in_the_same_process(tiny_llama, capfd):
    from quantkit.cli import main

    root = logging.getLogger(events.ROOT)
    before = (root.level, root.propagate, list(root.handlers))
    main(["inspect", str(tiny_llama)])
    capfd.readouterr()
    events.logger("run").info("[x] after the command")
    assert capfd.readouterr() == ("", "") and (root.level, root.propagate, list(root.handlers)) == before
