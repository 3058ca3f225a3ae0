"""``quantkit serve`` on a GGUF: llama-server of the same llama.cpp commit runs the model (settings
from the artifact's manifest and bench), quantkit's front (quantkit.serve.front) answers on the
user's address with the web chat page, /health, /metrics, the API key and the limits.
``backend_for`` decides which server runs an artifact and says why."""

import asyncio
import html
import signal
from importlib import resources
from pathlib import Path

from quantkit.core.errors import QuantkitError

BACKENDS = ("auto", "llama-server", "in-process")


def backend_for(path: Path, engine: str | None, asked: str = "auto") -> tuple[str, str]:
    """(backend, why): llama-server for a GGUF when its tools are built, else quantkit's in-process server."""
    from quantkit.core.errors import DependencyError, InputError
    from quantkit.engines import engine_for

    name = engine or engine_for(Path(path))
    if asked == "in-process":
        return "in-process", "asked for (--backend in-process)"
    if name != "llama.cpp":
        if asked == "llama-server":
            raise InputError(f"llama-server runs GGUF files; {Path(path).name} is a {name} artifact")
        return "in-process", f"{name} artifacts run in quantkit's own server (llama-server runs GGUF only)"
    from quantkit.engines.llamacpp_tools import tool

    try:
        tool("llama-server")
    except DependencyError as exc:
        if asked == "llama-server":
            raise
        return "in-process", f"llama-server is not built ({exc.hint})"
    return "llama-server", "GGUF, llama-server built from the runtime's sdist"


def serve_llama_server(path: Path, options, engine_options, on_ready=print, say=print) -> None:
    """Start llama-server on a loopback port behind its /health, then the front on ``options``'
    address; both stop on Ctrl-C / SIGTERM (llama-server also dies with this process)."""
    import os

    from quantkit.engines.llama_server import LlamaServer, choose_settings
    from quantkit.serve.app import API_KEY_ENV, listen

    api_key = options.api_key if options.api_key is not None else os.environ.get(API_KEY_ENV) or None
    settings = choose_settings(
        path,
        alias=options.model_name or (path.stem if path.suffix == ".gguf" else path.name),  # as the in-process server names it
        threads=engine_options.threads,
        parallel=options.parallel,
        n_ctx=options.n_ctx,
        n_gpu_layers=engine_options.n_gpu_layers,
        device=engine_options.device,
        flash_attn=engine_options.flash_attn,
        api_key=api_key,
    )
    server = LlamaServer(settings)
    say(f"llama-server runs {settings.gguf.name}: {settings.shown()}  (threads: {settings.why['threads']})")
    with server.start():
        sock = listen(options.host, options.port)
        page = resources.files("quantkit").joinpath("data/chat.html").read_text()
        page = page.replace("{{MODEL}}", html.escape(settings.alias)).encode()
        asyncio.run(run_front(sock, server, options, settings.alias, page, api_key, on_ready))
        if server.proc.poll() is not None:
            raise QuantkitError(f"llama-server stopped (exit code {server.proc.returncode}): {server.log_tail(1)}")


async def run_front(sock, server, options, model: str, page: bytes, api_key, on_ready) -> None:
    from quantkit.serve.control_text import ControlText
    from quantkit.serve.front import Front

    front = Front(("127.0.0.1", server.settings.port), options, model, page, api_key, alive=lambda: server.proc.poll() is None)
    front.control_text = ControlText.of_gguf(server.settings.gguf)
    listener = await asyncio.start_server(front.handle, sock=sock, limit=1 << 16)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    host = f"[{options.host}]" if ":" in options.host else options.host
    on_ready(f"http://{host}:{sock.getsockname()[1]}")
    while not stop.is_set() and server.proc.poll() is None:  # a dead llama-server ends the front too
        try:
            await asyncio.wait_for(stop.wait(), 1.0)
        except TimeoutError:
            pass
    listener.close()
