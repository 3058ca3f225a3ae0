"""An OpenAI-compatible HTTP server over any engine (FastAPI + uvicorn): /v1/models,
/v1/chat/completions, /v1/completions (SSE streaming or not), the seed's ``POST /`` endpoint, a
web chat page at ``GET /``, and /health + /metrics. Requests wait in a bounded, fair queue for the
engine thread (quantkit.serve.worker), which decodes up to ``parallel`` of them together; bad
requests get OpenAI-shaped JSON errors."""

import asyncio
import hmac
import html
import json
import os
import socket
import time
from collections import Counter
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from quantkit.core.errors import InputError, missing_extra
from quantkit.engines import EngineOptions, load_engine
from quantkit.engines.base import engine_option
from quantkit.serve.completion import Completion, api_error, cancel_on_disconnect, pieces
from quantkit.serve.openai_api import APIError, field, job_from, messages_from, stops_from, unencodable_field
from quantkit.serve.worker import EngineWorker, Job, QueueFull

API_KEY_ENV = "QUANTKIT_API_KEY"
ROUTES = ("/", "/health", "/metrics", "/v1/models", "/v1/chat/completions", "/v1/completions")


@dataclass
class ServeOptions:
    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = None  # None: QUANTKIT_API_KEY if set, else no auth
    model_name: str | None = None  # the id clients pass as "model"; default: the artifact's name
    n_ctx: int = engine_option("n_ctx")  # per slot; the engine's setting (engines/base.py)
    max_tokens_limit: int = 2048  # larger max_tokens is a 400; an omitted one means up to this
    queue_size: int = 32  # waiting requests beyond this get 429
    parallel: int = 4  # requests decoded together (continuous batching); 1: one at a time
    max_body_bytes: int = 1 << 20
    log_level: str = "warning"


class StatusCounter:
    """Counts responses by route and status for /metrics. Plain ASGI, so streamed responses and
    client disconnects pass through untouched (BaseHTTPMiddleware would wrap them)."""

    def __init__(self, app, counts: Counter):
        self.app, self.counts = app, counts

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        route = scope["path"] if scope["path"] in ROUTES else "other"

        async def counting_send(message):
            if message["type"] == "http.response.start":
                self.counts[(route, message["status"])] += 1
            await send(message)

        await self.app(scope, receive, counting_send)


def served_name(engine) -> str:
    path = Path(engine.path)
    return path.stem if path.suffix == ".gguf" else path.name


def _no_constant(name: str):
    raise ValueError(f"{name} is not JSON")  # NaN/Infinity would slip past every range check


def create_app(engine, options: ServeOptions | None = None):
    """The FastAPI app over ``engine``; starts the engine thread."""
    try:
        from fastapi import FastAPI, Request
        from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, StreamingResponse
        from starlette.exceptions import HTTPException
    except ImportError:
        raise missing_extra("fastapi", "serve") from None

    options = options or ServeOptions()
    api_key = options.api_key if options.api_key is not None else os.environ.get(API_KEY_ENV) or None
    model = options.model_name or served_name(engine)
    worker = EngineWorker(engine, options.n_ctx, options.max_tokens_limit, options.queue_size, options.parallel)
    statuses: Counter = Counter()
    app = FastAPI(title="quantkit serve", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.worker = worker

    @app.exception_handler(APIError)
    async def _api_error_response(request, exc: APIError):
        return JSONResponse(exc.body(), status_code=exc.status)

    @app.exception_handler(HTTPException)
    async def _http_error_response(request, exc: HTTPException):
        return JSONResponse(
            APIError(exc.status_code, str(exc.detail), code=str(exc.status_code)).body(), status_code=exc.status_code
        )

    @app.exception_handler(Exception)
    async def _crash_response(request, exc: Exception):
        return JSONResponse(APIError(500, f"internal error: {type(exc).__name__}", "server_error").body(), status_code=500)

    app.add_middleware(StatusCounter, counts=statuses)

    def authorize(request: Request) -> None:
        if api_key is None:
            return
        given = request.headers.get("authorization", "")
        if not (given.startswith("Bearer ") and hmac.compare_digest(given[7:].encode(), api_key.encode())):
            raise APIError(401, "missing or invalid API key (send 'Authorization: Bearer KEY')", code="invalid_api_key")

    async def read_json(request: Request) -> dict:
        authorize(request)
        declared = request.headers.get("content-length", "")
        too_big = APIError(413, f"request body over {options.max_body_bytes} bytes", code="request_too_large")
        if declared.isdigit() and int(declared) > options.max_body_bytes:
            raise too_big
        raw = bytearray()
        async for chunk in request.stream():  # chunked bodies carry no length: count as they come
            raw += chunk
            if len(raw) > options.max_body_bytes:
                raise too_big
        try:
            body = json.loads(raw, parse_constant=_no_constant)
        except (ValueError, UnicodeDecodeError):
            raise APIError(400, "the request body is not valid JSON", code="invalid_json") from None
        if not isinstance(body, dict):
            raise APIError(400, "the request body must be a JSON object", code="invalid_type")
        if (where := unencodable_field(body)) is not None:
            raise APIError(
                400,
                f"'{where}' holds a lone UTF-16 surrogate, which is not valid Unicode text",
                code="invalid_value",
                param=where,
            )
        requested = body.get("model")
        if requested is not None and requested != model:
            raise APIError(
                404,
                f"the model {requested!r} does not exist; this server serves {model!r}",
                code="model_not_found",
                param="model",
            )
        return body

    async def start(request: Request, job: Job):
        job.client = request.client.host if request.client else "-"
        try:
            events = worker.submit(job)
        except QueueFull:
            raise APIError(
                429,
                f"the server is busy ({options.queue_size} requests waiting); retry later",
                type_="rate_limit_exceeded",
                code="queue_full",
            ) from None
        try:
            event = await events.get()
        except asyncio.CancelledError:
            job.cancel.set()
            raise
        if event[0] == "error":
            raise api_error(event[1])
        return events, event[1]

    async def respond(request: Request, body: dict, job: Job, kind: str):
        """Run ``job``; a JSON completion, or an SSE stream of chunks when asked."""
        stops = stops_from(body)
        stream = field(body, "stream", bool, False)
        usage_in_stream = bool(field(body, "stream_options", dict, {}).get("include_usage"))
        # A client that leaves while its request waits or runs frees the engine (the SSE
        # response watches for that itself once it starts).
        watcher = asyncio.create_task(cancel_on_disconnect(request.receive, job))
        try:
            events, prompt_tokens = await start(request, job)
            if not stream:
                texts, count, finish = [], 0, "stop"
                try:
                    async for items in pieces(events, job, stops):
                        for text, count, finish in items:  # noqa: B007 (read after)
                            texts.append(text or "")
                finally:
                    job.cancel.set()
        finally:
            watcher.cancel()
        answer = Completion(model, kind == "chat", prompt_tokens)
        if not stream:
            return JSONResponse(answer.whole("".join(texts), finish, count))
        return StreamingResponse(
            answer.sse(events, job, stops, usage_in_stream),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        body = await read_json(request)
        return await respond(request, body, job_from(body, options.max_tokens_limit, messages=messages_from(body)), "chat")

    @app.post("/v1/completions")
    async def completions(request: Request):
        body = await read_json(request)
        prompt = body.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
            prompt = prompt[0]
        token_ids = isinstance(prompt, list) and prompt and all(type(i) is int and i >= 0 for i in prompt)
        if not (isinstance(prompt, str) or token_ids):  # OpenAI's prompt: a string, or one prompt's token ids
            raise APIError(400, "'prompt' must be a string or a list of token ids", code="invalid_type", param="prompt")
        return await respond(request, body, job_from(body, options.max_tokens_limit, prompt=prompt), "completion")

    @app.post("/")
    async def simple(request: Request):
        """The seed's endpoint: {"prompt"} -> {"response", "status", "time"}, as one user turn."""
        started = time.perf_counter()
        body = await read_json(request)
        prompt = body.get("prompt")
        if not isinstance(prompt, str) or not prompt:
            raise APIError(400, "'prompt' must be a non-empty string", code="invalid_type", param="prompt")
        job = job_from(
            {**body, "temperature": body.get("temperature", 0.0)},
            options.max_tokens_limit,
            messages=[{"role": "user", "content": prompt}],
        )
        answer = json.loads((await respond(request, {}, job, "chat")).body)
        return {
            "response": answer["choices"][0]["message"]["content"],
            "status": 200,
            "time": round(time.perf_counter() - started, 3),
        }

    @app.get("/v1/models")
    async def models(request: Request):
        authorize(request)
        return {
            "object": "list",
            "data": [
                {"id": model, "object": "model", "created": int(time.time()), "owned_by": "quantkit", "engine": engine.name}
            ],
        }

    @app.get("/health")
    async def health():
        return {
            "status": "ok",
            "model": model,
            "engine": engine.name,
            "queue": {"waiting": worker.waiting, "running": worker.running, "capacity": options.queue_size},
            "slots": {"parallel": worker.parallel, "n_ctx_per_slot": worker.n_ctx, "n_ctx_total": worker.n_ctx * worker.parallel},
        }

    @app.get("/metrics")
    async def metrics(request: Request):
        authorize(request)
        c = worker.counters
        lines = [
            "# HELP quantkit_queue_waiting Requests waiting for the engine.",
            "# TYPE quantkit_queue_waiting gauge",
            f"quantkit_queue_waiting {worker.waiting}",
            "# HELP quantkit_requests_running Requests the engine is generating for.",
            "# TYPE quantkit_requests_running gauge",
            f"quantkit_requests_running {worker.running}",
            "# HELP quantkit_queue_capacity Waiting requests allowed before 429.",
            "# TYPE quantkit_queue_capacity gauge",
            f"quantkit_queue_capacity {options.queue_size}",
            "# HELP quantkit_slots Requests decoded together (continuous batching).",
            "# TYPE quantkit_slots gauge",
            f"quantkit_slots {worker.parallel}",
            "# HELP quantkit_slot_context_tokens Context (tokens) of one slot: prompt + reply.",
            "# TYPE quantkit_slot_context_tokens gauge",
            f"quantkit_slot_context_tokens {worker.n_ctx}",
            "# HELP quantkit_context_tokens_total Context (tokens) of all slots together.",
            "# TYPE quantkit_context_tokens_total gauge",
            f"quantkit_context_tokens_total {worker.n_ctx * worker.parallel}",
            "# HELP quantkit_prompt_tokens_total Prompt tokens processed.",
            "# TYPE quantkit_prompt_tokens_total counter",
            f"quantkit_prompt_tokens_total {c['prompt_tokens']}",
            "# HELP quantkit_generation_tokens_total Tokens generated.",
            "# TYPE quantkit_generation_tokens_total counter",
            f"quantkit_generation_tokens_total {c['completion_tokens']}",
            "# HELP quantkit_requests_rejected_total Requests refused because the queue was full.",
            "# TYPE quantkit_requests_rejected_total counter",
            f"quantkit_requests_rejected_total {c['rejected_full']}",
            "# HELP quantkit_http_responses_total HTTP responses by route and status.",
            "# TYPE quantkit_http_responses_total counter",
        ]
        lines += [
            f'quantkit_http_responses_total{{route="{route}",status="{status}"}} {n}'
            for (route, status), n in sorted(statuses.items())
        ]
        return PlainTextResponse("\n".join(lines) + "\n", media_type="text/plain; version=0.0.4")

    @app.get("/", response_class=HTMLResponse)
    async def page():
        return HTMLResponse(
            resources.files("quantkit").joinpath("data/chat.html").read_text().replace("{{MODEL}}", html.escape(model))
        )

    return app


def listen(host: str, port: int) -> socket.socket:
    """A listening socket; port 0 picks a free one (its real number is in getsockname)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise InputError(f"cannot listen on {host}:{port}: {exc.strerror}", hint="choose another `port`") from None
    sock.listen(128)
    return sock


def serve(
    artifact: Path | str,
    options: ServeOptions | None = None,
    engine_options: EngineOptions | None = None,
    engine_name: str | None = None,
    on_ready=print,
) -> None:
    """Load ``artifact`` and serve it until interrupted; ``on_ready(url)`` once it listens."""
    try:
        import uvicorn
    except ImportError:
        raise missing_extra("uvicorn", "serve") from None
    options = options or ServeOptions()
    engine_options = engine_options or EngineOptions(n_ctx=options.n_ctx, flash_attn=True)
    engine = load_engine(artifact, engine_options, engine_name)
    try:
        app = create_app(engine, options)
        sock = listen(options.host, options.port)
        host = f"[{options.host}]" if ":" in options.host else options.host
        on_ready(f"http://{host}:{sock.getsockname()[1]}")
        server = uvicorn.Server(uvicorn.Config(app, log_level=options.log_level, timeout_graceful_shutdown=5))
        server.run(sockets=[sock])
        app.state.worker.stop()
    finally:
        engine.close()
