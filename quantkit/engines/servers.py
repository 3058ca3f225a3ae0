"""The deployment servers quantkit drives (llama-server for GGUF, vLLM's OpenAI server for what the
methods declare vLLM runs): one table that ``quantkit serve`` and ``quantkit bench --engine`` ask,
and the one way a server process is started behind its /health, bound to loopback, killed with
its parent. Each server's module declares ``choose_settings(path, **asked)``, ``Server`` and
``require()`` (raises DependencyError with the fix when it is not installed here)."""

import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from importlib import import_module
from pathlib import Path

from quantkit.core.atomic import die_with_parent
from quantkit.core.errors import EngineError, InputError


@dataclass(frozen=True)
class ServerEntry:
    module: str  # declares choose_settings, Server, require
    runtime: str  # the runtime name methods declare for their formats (FormatFacts.runtimes)
    summary: str  # said at start: why this server runs the artifact
    parallel_sizes: bool = False  # takes tensor/pipeline-parallel sizes (one model across GPUs and nodes)


SERVERS: dict[str, ServerEntry] = {
    "llama-server": ServerEntry("quantkit.engines.llama_server", "llama.cpp", "llama-server built from the runtime's sdist"),
    "vllm": ServerEntry("quantkit.engines.vllm_server", "vllm", "vLLM's OpenAI server (its own venv)", parallel_sizes=True),
}


def server_module(name: str):
    if name not in SERVERS:
        raise InputError(f"unknown serving engine {name!r}", hint=f"choose one of {', '.join(SERVERS)}")
    return import_module(SERVERS[name].module)


def runtimes_of(path: Path) -> tuple[set[str], bool]:
    """(runtimes that load ``path`` as it is, declared): its manifest's record of the method's
    declaration; a bare .gguf is llama.cpp's; a plain Hugging Face folder loads in transformers and
    vLLM, undeclared (``auto`` leaves it to quantkit's own server, as before vLLM)."""
    from quantkit.core.manifest import read_manifest
    from quantkit.engines import engine_for

    path = Path(path)
    manifest = read_manifest(path) if path.is_dir() else None
    if manifest and manifest.get("runtimes"):
        return set(manifest["runtimes"]), True
    if engine_for(path) == "llama.cpp":
        return {"llama.cpp"}, True
    return {"transformers", "vllm"}, False


def choose_server(path: Path, asked: str = "auto") -> tuple[str | None, str]:
    """(server, why): the asked server (refused with the reason when it cannot run ``path``), or for
    ``auto`` the first in the table that runs the declared format and is installed; None: none does."""
    from quantkit.core.errors import DependencyError

    runtimes, declared = runtimes_of(path)
    if asked == "auto" and not declared:
        return None, "a plain model folder (no quantkit.json declares its runtimes): --backend names a server"
    reasons = []
    for name in [asked] if asked in SERVERS else list(SERVERS):
        if SERVERS[name].runtime not in runtimes:
            if asked == name:
                raise InputError(f"{name} does not run {Path(path).name} (it loads in {', '.join(sorted(runtimes))})")
            continue
        try:
            server_module(name).require()
        except DependencyError as exc:
            if asked == name:
                raise
            reasons.append(f"{name} is not installed ({exc.hint or exc})")
            continue
        return name, f"it loads in {', '.join(sorted(runtimes))}: {SERVERS[name].summary}"
    return None, "; ".join(reasons) or f"no deployment server runs it (it loads in {', '.join(sorted(runtimes))})"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class ServerProcess:
    """One server process: ``with Server(settings) as server: server.url``. A subclass names itself
    and its command line; settings carry host, port and ``shown()``."""

    name = "server"
    start_timeout = 300.0  # seconds to wait for /health

    def __init__(self, settings, log: Path | None = None):
        self.settings = settings
        if not settings.port:
            settings.port = free_port(settings.host)
        self.own_log = log is None  # a temporary log, removed at stop (kept when loading failed)
        self.log_path = log or Path(tempfile.mkdtemp(prefix=f"quantkit-{self.name}-")) / f"{self.name}.log"
        self.proc: subprocess.Popen | None = None

    def command(self) -> list[str]:
        raise NotImplementedError

    def environment(self) -> dict | None:
        return None  # inherit quantkit's

    @property
    def url(self) -> str:
        host = f"[{self.settings.host}]" if ":" in self.settings.host else self.settings.host
        return f"http://{host}:{self.settings.port}"

    def start(self, timeout: float | None = None) -> "ServerProcess":
        timeout = timeout or self.start_timeout
        command = self.command()
        log = open(self.log_path, "ab")  # noqa: SIM115 (the child writes it for its whole life)
        try:
            self.proc = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.environment(),
                preexec_fn=die_with_parent,  # never outlives quantkit, even after a SIGKILL
            )
        finally:
            log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise EngineError(
                    f"{self.name} exited (code {self.proc.returncode}) while loading: {self.reason()}",
                    hint=f"its log: {self.log_path}",
                )
            if self.healthy():
                return self
            time.sleep(0.1)
        self.stop()
        raise EngineError(f"{self.name} was not healthy after {timeout:.0f} s", hint=f"its log: {self.log_path}")

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/health", timeout=2) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False  # 503 while it loads, refused before it listens

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return "\n".join(text[-lines:])

    def reason(self) -> str:
        """Why it stopped, in one line: the last of its log (a server may know better)."""
        return self.log_tail(1)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self.own_log and self.proc is not None and self.proc.returncode in (0, -15):
            import shutil

            shutil.rmtree(self.log_path.parent, ignore_errors=True)

    def __enter__(self) -> "ServerProcess":
        return self.start() if self.proc is None else self

    def __exit__(self, *exc) -> None:
        self.stop()
