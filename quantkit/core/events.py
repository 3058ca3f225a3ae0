"""One output channel: library code reports through ``logging``, under the ``quantkit`` logger.

- a message: ``log = events.logger(__name__)`` then ``log.info(...)`` / ``log.warning(...)``;
- a stage line of a long job (``[quantize nf4] done in 12s``): ``events.stage(log, "quantize", text)``;
- a progress step within a job (bench: ``load``, ``speed``, ...): ``events.progress(log, "bench", step)``;
- a tool's own output (llama-quantize, the converter): ``events.tool_output(line)``.

The ``quantkit`` logger has a NullHandler, so the Python API prints nothing unless the caller asks:
``with quantkit.core.events.listen(print):`` (or any handler on the ``quantkit`` logger). The CLI
installs its renderer once (quantkit/cli/render_events.py). Output the libraries write themselves
(tqdm, llama.cpp's C logs, child processes) is not ours to route: a run sends it to its log.
"""

import contextlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass

ROOT = "quantkit"
TOOLS = f"{ROOT}.tools"  # the lines a tool prints, relayed as they come

logging.getLogger(ROOT).addHandler(logging.NullHandler())


@dataclass(frozen=True)
class Event:
    """One report: its text and level, the job it belongs to (``stage``: run, quantize, bench...)
    when it is a stage line or a progress step, and the step's name (``step``) for a step."""

    message: str
    level: int = logging.INFO
    stage: str | None = None
    step: str | None = None
    logger: str = ROOT

    @classmethod
    def of(cls, record: logging.LogRecord) -> "Event":
        return cls(
            record.getMessage(), record.levelno, getattr(record, "stage", None), getattr(record, "step", None), record.name
        )


def logger(name: str) -> logging.Logger:
    """The logger of a quantkit module (``__name__``) or of a job (``"run"``), under ``quantkit``."""
    return logging.getLogger(name if name == ROOT or name.startswith(f"{ROOT}.") else f"{ROOT}.{name}")


def stage(log: logging.Logger, name: str, message: str) -> None:
    log.info(message, extra={"stage": name})


def progress(log: logging.Logger, name: str, step: str) -> None:
    log.info(step, extra={"stage": name, "step": step})


def tool_output(line: str) -> None:
    logging.getLogger(TOOLS).info(line.rstrip("\n"))


class CallbackHandler(logging.Handler):
    """Hands each record to ``callback`` as an Event."""

    def __init__(self, callback: Callable[[Event], None], level: int = logging.INFO):
        super().__init__(level)
        self.callback = callback

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.callback(Event.of(record))
        except Exception:  # noqa: BLE001 - a listener's bug must not stop the job
            self.handleError(record)


@contextlib.contextmanager
def listen(callback: Callable[[Event], None], level: int = logging.INFO) -> Iterator[CallbackHandler]:
    """Call ``callback(event)`` for each report at ``level`` or above while the block runs."""
    root = logging.getLogger(ROOT)
    handler, before = CallbackHandler(callback, level), root.level
    root.addHandler(handler)
    if root.getEffectiveLevel() > level:
        root.setLevel(level)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(before)
