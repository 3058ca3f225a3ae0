"""llama-server (built by ``make tools`` from the same sdist as the runtime, so converter, tools,
server and runtime are one commit) as quantkit runs it: settings chosen from the artifact's
manifest and bench, started behind its ``/health``, bound to 127.0.0.1, killed with its parent.
``quantkit serve`` puts its front in front of it; ``quantkit bench --engine llama-server`` load-tests it."""

import os
from dataclasses import dataclass, field
from pathlib import Path

from quantkit.core.errors import InputError
from quantkit.engines.servers import ServerProcess


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
    tensor_parallel: int = 1,
    pipeline_parallel: int = 1,
) -> ServerSettings:
    """llama-server's settings for the artifact at ``path`` (.gguf file or GGUF artifact folder):
    what is given, else what its bench ran with, else the in-process engine's defaults."""
    from quantkit.engines.llamacpp import find_gguf

    if tensor_parallel > 1 or pipeline_parallel > 1:
        raise InputError("tensor/pipeline-parallel sizes are vLLM's", hint="llama-server spreads layers over GPUs with -ngl")

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


def require() -> Path:
    """llama-server's binary (DependencyError with the fix when ``make tools`` has not built it)."""
    from quantkit.engines.llamacpp_tools import tool

    return tool("llama-server")


class LlamaServer(ServerProcess):
    """One llama-server process: ``with LlamaServer(settings) as server: server.url``."""

    name = "llama-server"

    def command(self) -> list[str]:
        return [str(require()), *self.settings.args()]


Server = LlamaServer  # the name quantkit.engines.servers asks every server module for
