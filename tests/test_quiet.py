"""The quiet terminal: library output (Python, C-level and child processes) goes to the log file,
quantkit's stage lines to the terminal, its other messages to the log with the libraries'."""

import subprocess
import sys

SCRIPT = r"""
import os, subprocess, sys
from quantkit.cli.render_events import install
from quantkit.core import events
from quantkit.core.quiet import libraries_to_log
install()
with libraries_to_log(sys.argv[1]):
    print("python stdout noise")
    print("python stderr noise", file=sys.stderr)
    os.write(1, b"fd1 noise\n")
    subprocess.run([sys.executable, "-c", "print('child noise')"])
    events.stage(events.logger("run"), "run", "[stage] progress")
    events.logger("x").info("a message")
print("after")
"""


def test_library_output_goes_to_the_log_and_progress_to_the_terminal(tmp_path):
    log = tmp_path / "run.log"
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(log)], capture_output=True, text=True, check=True)
    assert proc.stderr == "[stage] progress\n"
    assert proc.stdout == "after\n"
    text = log.read_text()
    for noise in ("python stdout noise", "python stderr noise", "fd1 noise", "child noise", "quantkit: a message"):
        assert noise in text
    assert "[stage] progress" not in text
