"""A Python child process that answers with one JSON object, its last line of stdout: how
quantkit runs what can crash the interpreter (llama.cpp on a bad file) or must not see quantkit
(verification in a fresh ``python -I``). The child dies with its parent, even by SIGKILL."""

import json
import subprocess
import sys

from quantkit.core.atomic import die_with_parent


def run_json_child(args: list[str], **kwargs) -> tuple[subprocess.CompletedProcess, dict]:
    """Run ``python ARGS...``; return the finished process and its answer ({} when it gave none)."""
    proc = subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, errors="replace", preexec_fn=die_with_parent, **kwargs
    )
    lines = proc.stdout.strip().splitlines()
    try:
        answer = json.loads(lines[-1]) if lines else {}
    except json.JSONDecodeError:
        answer = {}
    return proc, answer if isinstance(answer, dict) else {}


def last_line(text: str) -> str:
    """A failed child's last words: the last non-blank line of its stderr (at most 500 characters)."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:500] if lines else ""
