"""A quiet terminal: while a long job runs, everything the libraries print - tqdm bars, loguru
warnings, llama.cpp's C logs, the converter child process - goes to a log file, and quantkit's own
progress lines (logger ``quantkit``) go to the terminal.

Redirection is at the file-descriptor level (``os.dup2`` on 1 and 2), because llama.cpp and child
processes write to the descriptors directly, past ``sys.stdout``/``sys.stderr``."""

import contextlib
import logging
import os
import sys
from pathlib import Path

LOGGER = "quantkit"


def progress_logger() -> logging.Logger:
    """quantkit's progress channel; a handler on stderr is added once, unless the caller set one."""
    logger = logging.getLogger(LOGGER)
    if not logger.handlers:
        handler = logging.StreamHandler(_Terminal())
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
    return logger


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
    """Send descriptors 1 and 2 to ``log_file`` (appended) for the duration; quantkit's progress
    logger keeps writing to the terminal. Nested or disabled (``-v``): a no-op."""
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
