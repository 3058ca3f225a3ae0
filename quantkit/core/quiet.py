"""A quiet terminal: while a long job runs, everything the libraries print - tqdm bars, loguru
warnings, llama.cpp's C logs, the converter child process - goes to a log file, and quantkit's own
stage lines (quantkit.core.events, rendered by the CLI through ``terminal()``) go to the terminal.

Redirection is at the file-descriptor level (``os.dup2`` on 1 and 2), because llama.cpp and child
processes write to the descriptors directly, past ``sys.stdout``/``sys.stderr``."""

import contextlib
import os
import sys
from pathlib import Path


def terminal() -> "_Terminal":
    """A stream to the real terminal, for the CLI's stage lines (quantkit/cli/render_events.py)."""
    return _Terminal()


class _Terminal:
    """A stream that writes to the real terminal even while descriptors 1 and 2 point at a log."""

    saved_fd: int | None = None  # a dup of the original stderr while output is redirected

    def write(self, text: str) -> int:
        if _Terminal.saved_fd is None:
            return sys.stderr.write(text)
        return os.write(_Terminal.saved_fd, text.encode("utf-8", "replace"))

    def flush(self) -> None:
        if _Terminal.saved_fd is None:
            sys.stderr.flush()


@contextlib.contextmanager
def libraries_to_log(log_file: Path | str, enabled: bool = True):
    """Send descriptors 1 and 2 to ``log_file`` (appended) for the duration; ``terminal()`` keeps writing to
    the terminal. Nested or disabled (``-v``): a no-op."""
    if not enabled or _Terminal.saved_fd is not None:
        yield None
        return
    log_file = Path(log_file)
    log_file.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved_out, saved_err = os.dup(1), os.dup(2)
    log_fd = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    _Terminal.saved_fd = saved_err
    try:
        os.dup2(log_fd, 1)
        os.dup2(log_fd, 2)
        yield log_file
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved_out, 1)
        os.dup2(saved_err, 2)
        _Terminal.saved_fd = None
        for fd in (saved_out, saved_err, log_fd):
            os.close(fd)


@contextlib.contextmanager
def libraries_silenced():
    """For the Python API: the libraries' progress bars and info logs (transformers, huggingface_hub,
    llm-compressor's loguru) are off for the duration, then restored; their warnings stay. The CLI
    leaves them on: a terminal user sees them, and a run sends them to its log."""
    undo = []
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:
        pass
    else:
        bars, verbosity = hf_logging.is_progress_bar_enabled(), hf_logging.get_verbosity()
        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_warning()
        undo.append(lambda: (bars and hf_logging.enable_progress_bar(), hf_logging.set_verbosity(verbosity)))
    try:
        from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars
    except ImportError:
        pass
    else:
        if not are_progress_bars_disabled():
            disable_progress_bars()
            undo.append(enable_progress_bars)
    try:
        from loguru import logger
    except ImportError:
        pass
    else:
        logger.disable("llmcompressor")
        undo.append(lambda: logger.enable("llmcompressor"))
    try:
        yield
    finally:
        for step in reversed(undo):
            step()
