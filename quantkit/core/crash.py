"""A child process killed by a signal is a crash of the engine it ran, not a verdict on the user's
file: one message for it wherever quantkit runs llama.cpp or a library in a child."""

import signal

from quantkit.core.errors import EngineCrashed

DOCTOR_HINT = "run `quantkit doctor` to see whether this build of {engine} runs on this machine (a bug report wants its output)"


def signal_of(returncode: int | None) -> signal.Signals | None:
    """The signal that ended a child: subprocess gives -N, a shell wrapper 128+N."""
    if returncode is None or returncode == 0:
        return None
    number = -returncode if returncode < 0 else returncode - 128 if 128 < returncode < 160 else None
    try:
        return signal.Signals(number) if number else None
    except ValueError:
        return None


# A user's Ctrl-C / kill is not a crash: only the signals a faulting process takes.
CRASH_SIGNALS = {signal.SIGSEGV, signal.SIGBUS, signal.SIGILL, signal.SIGFPE, signal.SIGABRT}


def crashed(returncode: int | None) -> signal.Signals | None:
    sig = signal_of(returncode)
    return sig if sig in CRASH_SIGNALS else None


def crash_error(engine: str, action: str, returncode: int, detail: str = "") -> EngineCrashed:
    """``{engine} crashed (SIGSEGV) while {action}; the file itself was not judged``."""
    sig = crashed(returncode) or signal_of(returncode)
    name = sig.name if sig else f"exit {returncode}"
    why = f": {detail}" if detail else ""
    return EngineCrashed(
        f"{engine} crashed ({name}) while {action}; the file itself was not judged{why}",
        hint=DOCTOR_HINT.format(engine=engine),
    )
