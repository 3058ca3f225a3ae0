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


def install() -> None:
    """Render the library's reports on the terminal (once per process; the CLI's entry calls it)."""
    root = logging.getLogger(ROOT)
    if not any(isinstance(h, TerminalHandler) for h in root.handlers):
        root.addHandler(TerminalHandler())
    root.setLevel(logging.INFO)
    root.propagate = False  # a library's basicConfig must not print our lines twice
