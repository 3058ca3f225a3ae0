"""Typed errors. Library code raises these with an actionable message; the CLI turns them
into one line on stderr and a non-zero exit (see ``cli.main``)."""


class QuantkitError(Exception):
    """Base class. ``exit_code`` is what the CLI exits with."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class InputError(QuantkitError):
    """The user asked for something that cannot work: bad path, bad option combination."""

    exit_code = 2


class DependencyError(QuantkitError):
    """An optional dependency (an extra) is missing."""


class PreflightError(QuantkitError):
    """A check before heavy work refused: unsupported architecture, no room, no CUDA..."""


class DownloadError(QuantkitError):
    """A hub could not give us the files: unknown repo/revision, auth, network."""


class IntegrityError(QuantkitError):
    """A file does not match its recorded checksum."""


class QuantizeError(QuantkitError):
    """The quantization library failed."""


class VerificationError(QuantizeError):
    """A freshly written artifact failed its check in its own runtime; nothing was published."""


class EngineError(QuantkitError):
    """An inference engine could not load or run an artifact."""


class EngineCrashed(EngineError):
    """An engine's process died by a signal (SIGSEGV, SIGILL...): a fault of the build or the
    machine, never a verdict on the file it was given."""


class GateFailed(QuantkitError):
    """A validation gate (smoke chat, quality thresholds) failed."""

    exit_code = 3


def missing_extra(package: str, extra: str) -> DependencyError:
    """The one message for a missing optional dependency."""
    return DependencyError(
        f"{package} is not installed",
        hint=f"pip install 'quantkit[{extra}]'",
    )


class PushError(QuantkitError):
    """A hub refused or lost an upload (``quantkit push``): rights, a missing repo, the network."""


class PushAuthError(PushError):
    """The hub rejected the access token."""


class QuotaExceeded(PushError):
    """The hub's storage quota for the account or repo is full."""
