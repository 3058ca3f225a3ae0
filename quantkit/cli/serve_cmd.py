import click

from quantkit.cli.chat_cmd import engine_flags, engine_options
from quantkit.serve.server_front import BACKENDS


@click.command(
    "serve",
    epilog="""\b
Examples:
  quantkit serve bundled:smollm2-135m-instruct
  quantkit serve ./smollm2-135m-instruct-gguf/model-Q4_K_M.gguf --port 8080
  QUANTKIT_API_KEY=secret quantkit serve ./smollm2-135m-instruct-nf4 --queue-size 8
  quantkit serve ./smollm2-135m-instruct-awq --backend vllm   (vLLM's venv: make vllm-venv)

\b
Then: open http://127.0.0.1:8000/ for the web chat, or point any OpenAI client at
http://127.0.0.1:8000/v1 (GET /health and /metrics show the queue).""",
)
@click.argument("artifact")
@click.option(
    "--host", default="127.0.0.1", show_default=True, help="Address to bind (0.0.0.0 exposes the server to the network)."
)
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True, help="0 picks a free port.")
@click.option("--api-key", envvar="QUANTKIT_API_KEY", help="Require 'Authorization: Bearer KEY' (env QUANTKIT_API_KEY).")
@click.option("--model-name", help="Model id clients use (default: the artifact's name).")
@click.option(
    "--parallel",
    type=click.IntRange(1, 64),
    default=4,
    show_default=True,
    help="Requests decoded together (continuous batching); each gets --n-ctx tokens of context.",
)
@click.option(
    "--queue-size",
    type=click.IntRange(1),
    default=32,
    show_default=True,
    help="Waiting requests (beyond the running ones) before 429.",
)
@click.option("--max-tokens-limit", type=click.IntRange(1), default=2048, show_default=True, help="Largest max_tokens accepted.")
@click.option("--max-body-bytes", type=click.IntRange(1024), default=1 << 20, show_default=True, help="Largest request body.")
@click.option(
    "--backend",
    type=click.Choice(BACKENDS),
    default="auto",
    show_default=True,
    help="Who runs the model behind quantkit's front: llama-server (GGUF, built by `make tools`), vllm "
    "(what the method declares vLLM runs; its venv from `make vllm-venv` or QUANTKIT_VLLM_PYTHON), or "
    "quantkit's in-process server (auto: the format's server when installed, else in-process; said at start).",
)
@click.option("--tensor-parallel", type=click.IntRange(1), default=1, show_default=True, help="vLLM: GPUs per pipeline stage.")
@click.option("--pipeline-parallel", type=click.IntRange(1), default=1, show_default=True, help="vLLM: pipeline stages.")
@click.option(
    "--log-level", type=click.Choice(["critical", "error", "warning", "info", "debug"]), default="warning", show_default=True
)
@engine_flags
def command(
    artifact,
    host,
    port,
    api_key,
    model_name,
    parallel,
    queue_size,
    max_tokens_limit,
    max_body_bytes,
    backend,
    tensor_parallel,
    pipeline_parallel,
    log_level,
    engine,
    **engine_settings,
):
    """Serve ARTIFACT with an OpenAI-compatible API and a web chat page."""
    from quantkit.hub.model_ref import resolve_artifact
    from quantkit.serve.app import ServeOptions, serve

    path = resolve_artifact(artifact)
    click.echo(f"loading {path} ...", err=True)
    options = ServeOptions(
        host=host,
        port=port,
        api_key=api_key or None,
        model_name=model_name,
        n_ctx=engine_settings["n_ctx"],
        max_tokens_limit=max_tokens_limit,
        queue_size=queue_size,
        parallel=parallel,
        max_body_bytes=max_body_bytes,
        log_level=log_level,
    )
    from quantkit.serve.server_front import IN_PROCESS, backend_for, serve_in_server

    chosen, why = backend_for(path, engine, backend)
    ready = lambda url: click.echo(f"serving {url}  (web chat: {url}/, OpenAI API: {url}/v1)", err=False)  # noqa: E731
    say = lambda line: click.echo(line, err=True)  # noqa: E731
    if chosen != IN_PROCESS:
        say(f"{chosen} runs the model: {why}")
        return serve_in_server(
            chosen, path, options, engine_options(**engine_settings), ready, say, (tensor_parallel, pipeline_parallel)
        )
    say(f"quantkit's in-process server: {why}")
    serve(
        path,
        options,
        engine_options(**engine_settings),
        engine,
        on_ready=ready,
    )
