"""``quantkit serve`` in a deployment server: llama-server (GGUF) or vLLM's OpenAI server (what the
methods declare vLLM runs; quantkit.engines.servers is the table) runs the model with settings
from the artifact's manifest and bench; quantkit's front (quantkit.serve.front) answers on the
user's address with the web chat page, /health, /metrics, the API key and the limits.
``backend_for`` decides which server runs an artifact and says why."""

import asyncio
import html
import signal
from importlib import resources
from pathlib import Path

from quantkit.core.errors import QuantkitError
from quantkit.engines.servers import SERVERS

IN_PROCESS = "in-process"
BACKENDS = ("auto", *SERVERS, IN_PROCESS)


def backend_for(path: Path, engine: str | None, asked: str = "auto") -> tuple[str, str]:
    """(backend, why): the deployment server that runs the artifact's format when it is installed,
    else quantkit's in-process server (also for --engine, which picks an in-process engine)."""
    from quantkit.engines.servers import choose_server

    if asked == IN_PROCESS:
        return IN_PROCESS, "asked for (--backend in-process)"
    if engine and asked == "auto":
        return IN_PROCESS, f"--engine {engine} runs in quantkit's own server"
    name, why = choose_server(Path(path), asked)
    return (name, why) if name else (IN_PROCESS, why)


def serve_in_server(name: str, path: Path, options, engine_options, on_ready=print, say=print, parallel_sizes=(1, 1)) -> None:
    """Start server ``name`` on a loopback port behind its /health, then the front on ``options``'
    address; both stop on Ctrl-C / SIGTERM (the server also dies with this process)."""
    import os

    from quantkit.engines.servers import server_module
    from quantkit.serve.app import API_KEY_ENV, listen

    module = server_module(name)
    api_key = options.api_key if options.api_key is not None else os.environ.get(API_KEY_ENV) or None
    settings = module.choose_settings(
        path,
        alias=options.model_name or (path.stem if path.suffix == ".gguf" else path.name),  # as the in-process server names it
        threads=engine_options.threads,
        parallel=options.parallel,
        n_ctx=options.n_ctx,
        n_gpu_layers=engine_options.n_gpu_layers,
        device=engine_options.device,
        flash_attn=engine_options.flash_attn,
        api_key=api_key,
        tensor_parallel=parallel_sizes[0],
        pipeline_parallel=parallel_sizes[1],
    )
    server = module.Server(settings)
    chosen = ", ".join(f"{k}: {v}" for k, v in settings.why.items())
    say(f"{name} runs {path.name}: {settings.shown()}" + (f"  ({chosen})" if chosen else ""))
    with server.start():
        sock = listen(options.host, options.port)
        page = resources.files("quantkit").joinpath("data/chat.html").read_text()
        page = page.replace("{{MODEL}}", html.escape(settings.alias)).encode()
        asyncio.run(run_front(sock, server, options, settings.alias, page, api_key, on_ready))
        if server.proc.poll() is not None:
            raise QuantkitError(f"{name} stopped (exit code {server.proc.returncode}): {server.reason()}")


async def run_front(sock, server, options, model: str, page: bytes, api_key, on_ready) -> None:
    from quantkit.serve.control_text import ControlText
    from quantkit.serve.front import Front

    alive = lambda: server.proc.poll() is None  # noqa: E731
    front = Front(("127.0.0.1", server.settings.port), options, model, page, api_key, alive=alive, engine=server.name)
    front.control_text = ControlText.for_server(server.settings)  # typed control-token text kept plain
    listener = await asyncio.start_server(front.handle, sock=sock, limit=1 << 16)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    host = f"[{options.host}]" if ":" in options.host else options.host
    on_ready(f"http://{host}:{sock.getsockname()[1]}")
    while not stop.is_set() and server.proc.poll() is None:  # a dead server ends the front too
        try:
            await asyncio.wait_for(stop.wait(), 1.0)
        except TimeoutError:
            pass
    listener.close()
