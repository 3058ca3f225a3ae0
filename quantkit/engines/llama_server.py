"""llama-server (built by ``make tools`` from the same sdist as the runtime, so converter, tools,
server and runtime are one commit) as quantkit runs it: settings chosen from the artifact's
manifest and bench, started behind its ``/health``, bound to 127.0.0.1, killed with its parent.
``quantkit serve`` puts its front in front of it; ``quantkit bench --engine llama-server`` load-tests it."""

import os
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from quantkit.core.atomic import die_with_parent
from quantkit.core.errors import EngineError


@dataclass
class ServerSettings:
    gguf: Path
    alias: str  # the model id clients send and /v1/models lists
    threads: int  # -t and -tb
    parallel: int = 4  # slots (-np): requests decoded together
    n_ctx: int = 4096  # per slot; llama-server's -c is the total, split across slots
    n_gpu_layers: int = 0  # -ngl (-1: all)
    flash_attn: bool = True
    api_key: str | None = None
    host: str = "127.0.0.1"
    port: int = 0  # 0: a free port
    why: dict = field(default_factory=dict)  # where each setting came from, said at start

    def args(self) -> list[str]:
        args = ["-m", str(self.gguf), "--alias", self.alias, "--host", self.host, "--port", str(self.port)]
        args += ["-t", str(self.threads), "-tb", str(self.threads), "-np", str(self.parallel)]
        args += ["-c", str(self.n_ctx * self.parallel), "-fa", "on" if self.flash_attn else "off"]
        # --jinja: the GGUF's own chat template (quantkit checked it against the HF tokenizer's at quantize).
        args += ["-ngl", str(999 if self.n_gpu_layers < 0 else self.n_gpu_layers), "--jinja", "--metrics", "--no-webui"]
        return args + (["--api-key", self.api_key] if self.api_key else [])

    def shown(self) -> str:
        """The command line with the key hidden, for logs and records."""
        return " ".join("***" if self.api_key and a == self.api_key else a for a in ["llama-server", *self.args()])


def bench_threads(path: Path, gguf: Path) -> int | None:
    """The threads the artifact was benchmarked (and gated) with, from the results beside its card."""
    from quantkit.core.card_results import read_results

    folder = path if path.is_dir() else path.parent
    try:
        records = read_results(folder) or []
    except Exception:  # an unreadable record only means no bench to take settings from
        return None
    for record in records:
        if record.get("file") in (None, gguf.name) and (record.get("machine") or {}).get("threads"):
            return int(record["machine"]["threads"])
    return None


def choose_settings(
    path: Path,
    *,
    alias: str | None = None,
    threads: int | None = None,
    parallel: int = 4,
    n_ctx: int = 4096,
    n_gpu_layers: int = 0,
    device: str = "auto",
    flash_attn: bool = True,
    api_key: str | None = None,
) -> ServerSettings:
    """llama-server's settings for the artifact at ``path`` (.gguf file or GGUF artifact folder):
    what is given, else what its bench ran with, else the in-process engine's defaults."""
    from quantkit.engines.llamacpp import find_gguf

    path = Path(path)
    gguf = find_gguf(path)
    why = {}
    if threads:
        why["threads"] = "given"
    elif threads := bench_threads(path, gguf):
        why["threads"] = "the artifact's bench"
    else:
        threads = max(1, (os.cpu_count() or 2) // 2)
        why["threads"] = "half the cores (no bench recorded)"
    layers = n_gpu_layers
    if device == "cpu":
        layers = 0
    elif device == "cuda":
        layers = n_gpu_layers or -1
    return ServerSettings(
        gguf=gguf,
        alias=alias or gguf.stem,
        threads=threads,
        parallel=parallel,
        n_ctx=n_ctx,
        n_gpu_layers=layers,
        flash_attn=flash_attn,
        api_key=api_key,
        why=why,
    )


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class LlamaServer:
    """One llama-server process: ``with LlamaServer(settings) as server: server.url``."""

    def __init__(self, settings: ServerSettings, log: Path | None = None):
        self.settings = settings
        if not settings.port:
            settings.port = free_port(settings.host)
        self.own_log = log is None  # a temporary log, removed at stop (kept when loading failed)
        self.log_path = log or Path(tempfile.mkdtemp(prefix="quantkit-llama-server-")) / "llama-server.log"
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        host = f"[{self.settings.host}]" if ":" in self.settings.host else self.settings.host
        return f"http://{host}:{self.settings.port}"

    def start(self, timeout: float = 300) -> "LlamaServer":
        from quantkit.engines.llamacpp_tools import tool

        binary = tool("llama-server")
        log = open(self.log_path, "ab")  # noqa: SIM115 (the child writes it for its whole life)
        try:
            self.proc = subprocess.Popen(
                [str(binary), *self.settings.args()],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=die_with_parent,  # never outlives quantkit, even after a SIGKILL
            )
        finally:
            log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise EngineError(
                    f"llama-server exited (code {self.proc.returncode}) while loading: {self.log_tail(1)}",
                    hint=f"its log: {self.log_path}",
                )
            if self.healthy():
                return self
            time.sleep(0.1)
        self.stop()
        raise EngineError(f"llama-server was not healthy after {timeout:.0f} s", hint=f"its log: {self.log_path}")

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

    def __enter__(self) -> "LlamaServer":
        return self.start() if self.proc is None else self

    def __exit__(self, *exc) -> None:
        self.stop()
