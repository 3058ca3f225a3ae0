"""How the CLI shows the library's reports (quantkit.core.events): the one place they are rendered.

- stage lines (``[bench nf4] done in 12s``) go to the terminal, even while a run sends the
  libraries' output to its log (quantkit.core.quiet);
- messages go to stderr as ``quantkit: ...`` (``quantkit: warning: ...``), and a tool's own output
  as it came: both follow stderr, so a run's log receives them;
- progress steps are left to the command showing them (``bench``'s status line).
"""

import logging
import sys

from quantkit.core.events import ROOT, TOOLS, Event


class TerminalHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        from quantkit.core.quiet import terminal

        try:
            event = Event.of(record)
            if event.step:
                return
            if event.stage:
                terminal().write(event.message + "\n")
            elif event.logger == TOOLS:
                sys.stderr.write(event.message + "\n")
            else:
                level = "warning: " if event.level >= logging.WARNING else ""
                sys.stderr.write(f"quantkit: {level}{event.message}\n")
            sys.stderr.flush()
        except Exception:  # noqa: BLE001 - logging's own rule: a report never raises
            self.handleError(record)


_saved: list[tuple[int, bool]] = []  # the quantkit logger's level and propagate before install


def install() -> None:
    """Render the library's reports on the terminal until ``uninstall`` (the CLI's group does
    both around each command, so the Python API stays silent in the same process afterwards)."""
    root = logging.getLogger(ROOT)
    if not any(isinstance(h, TerminalHandler) for h in root.handlers):
        root.addHandler(TerminalHandler())
        _saved.append((root.level, root.propagate))
    root.setLevel(logging.INFO)
    root.propagate = False  # a library's basicConfig must not print our lines twice


def uninstall() -> None:
    root = logging.getLogger(ROOT)
    for handler in [h for h in root.handlers if isinstance(h, TerminalHandler)]:
        root.removeHandler(handler)
    if _saved:
        level, root.propagate = _saved.pop()
        root.setLevel(level)
