"""quantkit's thin front before llama-server: what llama-server lacks, in front of what it does.
It answers the web chat page at ``/``, ``/health`` (with the queue) and ``/metrics`` (quantkit's
lines, then llama-server's), checks the API key, body size, model name and max_tokens limit,
refuses with 429 beyond ``parallel + queue_size`` requests, and passes everything else through
as raw bytes (an asyncio protocol writes each chunk on as it arrives), so serving speed is llama-server's.
Each forwarded request gets its own upstream connection and ``Connection: close``; a client that
leaves closes it, and llama-server stops that slot."""

import asyncio
import json
import time
from collections import Counter

from quantkit.serve.openai_api import APIError

GENERATE = ("/v1/chat/completions", "/v1/completions", "/chat/completions", "/completions")
LOCAL = ("/", "/health", "/metrics")
HOP_HEADERS = ("connection", "keep-alive", "content-length", "transfer-encoding", "proxy-connection", "upgrade", "expect")
REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 413: "Payload Too Large"}
REASONS |= {429: "Too Many Requests", 500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable"}


class Reject(Exception):
    def __init__(self, error: APIError):
        self.error = error


class Front:
    def __init__(
        self,
        upstream: tuple[str, int],
        options,
        model: str,
        page: bytes,
        api_key: str | None,
        alive=lambda: True,
        engine="llama-server",
    ):
        self.upstream, self.options, self.model, self.page, self.api_key = upstream, options, model, page, api_key
        self.alive = alive  # is the server still running
        self.engine = engine  # which server runs the model (llama-server, vllm), as /health says
        self.control_text = None  # serve.control_text.ControlText: chat text holding control tokens kept plain
        self.in_flight = 0
        self.statuses: Counter = Counter()
        self.counters: Counter = Counter()

    # --- the connection loop ---------------------------------------------------------------

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                    return
                method, target, version, headers = parse_head(head)
                path = target.split("?", 1)[0]
                keep = version == "HTTP/1.1" and headers.get("connection", "").lower() != "close"
                try:
                    body = await self.read_body(reader, writer, headers)
                    if path in LOCAL or (path == "/" and method == "POST"):
                        await self.local(writer, method, path, headers, body)
                        if keep:
                            continue
                        return
                    self.authorize(headers, path)
                    body = self.checked(method, path, body)
                    if self.control_text is not None and self.control_text.applies(path, body):
                        from quantkit.serve.control_text import serve_as_text

                        try:
                            return await serve_as_text(self, writer, path, body)
                        except APIError as error:
                            raise Reject(error) from None
                except Reject as reject:
                    await self.send_error(writer, path, reject.error)
                    return
                await self.forward(reader, writer, method, target, path, headers, body)
                return
        except Exception:  # one broken connection never takes the server down
            return
        finally:
            writer.close()

    async def read_body(self, reader, writer, headers: dict) -> bytes:
        limit = self.options.max_body_bytes
        too_big = Reject(APIError(413, f"request body over {limit} bytes", code="request_too_large"))
        if headers.get("transfer-encoding", "").lower() == "chunked":
            body = bytearray()
            while True:
                size = int((await reader.readline()).split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    await reader.readline()
                    return bytes(body)
                if len(body) + size > limit:
                    raise too_big
                body += await reader.readexactly(size)
                await reader.readline()
        length = int(headers.get("content-length") or 0)
        if length > limit:
            raise too_big
        if length and headers.get("expect", "").lower() == "100-continue":  # curl, for bodies over 1 KiB
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        return await reader.readexactly(length) if length else b""

    # --- what quantkit checks before llama-server sees a request ----------------------------

    def authorize(self, headers: dict, path: str) -> None:
        if self.api_key is None:
            return
        import hmac

        given = headers.get("authorization", "")
        if not (given.startswith("Bearer ") and hmac.compare_digest(given[7:].encode(), self.api_key.encode())):
            raise Reject(APIError(401, "missing or invalid API key (send 'Authorization: Bearer KEY')", code="invalid_api_key"))

    def checked(self, method: str, path: str, body: bytes) -> bytes:
        """The body to forward: the model name and max_tokens checked, an omitted max_tokens set to
        the limit (as quantkit's own server does); 429 beyond the running and waiting slots."""
        if method != "POST" or path not in GENERATE:
            return body
        try:
            data = json.loads(body)
        except ValueError:
            raise Reject(APIError(400, "the request body is not valid JSON", code="invalid_json")) from None
        if not isinstance(data, dict):
            raise Reject(APIError(400, "the request body must be a JSON object", code="invalid_type"))
        requested = data.get("model")
        if requested is not None and requested != self.model:
            message = f"the model {requested!r} does not exist; this server serves {self.model!r}"
            raise Reject(APIError(404, message, code="model_not_found", param="model"))
        limit = self.options.max_tokens_limit
        key = "max_completion_tokens" if "max_completion_tokens" in data else "max_tokens"
        asked = data.get(key)
        if asked is not None and (not isinstance(asked, int) or isinstance(asked, bool) or not 1 <= asked <= limit):
            raise Reject(APIError(400, f"'{key}' must be an integer from 1 to {limit}", code="invalid_value", param=key))
        if self.in_flight >= self.options.parallel + self.options.queue_size:
            self.counters["rejected_full"] += 1
            message = f"the server is busy ({self.options.queue_size} requests waiting); retry later"
            raise Reject(APIError(429, message, type_="rate_limit_exceeded", code="queue_full"))
        if asked is None:
            data[key] = limit
            return json.dumps(data).encode()
        return body

    # --- passing a request through ----------------------------------------------------------

    async def forward(self, reader, writer, method: str, target: str, path: str, headers: dict, body: bytes) -> None:
        generating = path in GENERATE
        self.in_flight += generating
        up_writer = None
        try:
            loop = asyncio.get_running_loop()
            try:
                up_writer, relay = await loop.create_connection(lambda: Relay(writer.transport), *self.upstream)
            except OSError:
                await self.send_error(writer, path, APIError(502, "llama-server is not reachable", "server_error"))
                return
            kept = "".join(f"{k}: {v}\r\n" for k, v in headers.items() if k not in HOP_HEADERS)
            up_writer.write(
                f"{method} {target} HTTP/1.1\r\n{kept}Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body
            )
            # A client that leaves mid-reply closes the upstream connection: llama-server frees the slot.
            gone = asyncio.ensure_future(reader.read(1))
            gone.add_done_callback(lambda _: up_writer.close())
            try:
                head = await relay.head
                if head is not None:
                    status = int(head.split(b" ", 2)[1])
                    self.statuses[(route_of(path), status)] += 1
                    skip = (b"connection:", b"keep-alive:")
                    lines = [line for line in head.split(b"\r\n")[:-2] if not line.lower().startswith(skip)]
                    relay.start(b"\r\n".join([*lines, b"Connection: close", b"", b""]))
                    await relay.done
            finally:
                gone.cancel()
        except ConnectionError:
            pass
        finally:
            self.in_flight -= generating
            if up_writer is not None:
                up_writer.close()

    async def upstream_get(self, path: str) -> tuple[int, bytes]:
        """One request of quantkit's own to llama-server (its /metrics, a seed-endpoint reply)."""
        return await self.upstream_call("GET", path, b"")

    async def upstream_open(self, method: str, path: str, body: bytes):
        """A request of quantkit's own sent upstream (with the API key): the connection's (reader, writer)."""
        key = f"Authorization: Bearer {self.api_key}\r\n" if self.api_key else ""
        up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        up_writer.write(
            f"{method} {path} HTTP/1.1\r\nHost: llama-server\r\n{key}Content-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
            + body
        )
        await up_writer.drain()
        return up_reader, up_writer

    async def upstream_call(self, method: str, path: str, body: bytes) -> tuple[int, bytes]:
        up_reader, up_writer = await self.upstream_open(method, path, body)
        try:
            raw = await up_reader.read()
        finally:
            up_writer.close()
        head, _, payload = raw.partition(b"\r\n\r\n")
        if b"transfer-encoding: chunked" in head.lower():
            payload = dechunk(payload)
        return int(head.split(b" ", 2)[1]), payload

    # --- quantkit's own routes ---------------------------------------------------------------

    async def local(self, writer, method: str, path: str, headers: dict, body: bytes) -> None:
        if path == "/" and method == "POST":
            self.authorize(headers, path)
            return await self.send(writer, path, 200, await self.seed(body))
        if path == "/":
            return await self.send(writer, path, 200, self.page, "text/html; charset=utf-8")
        if path == "/health":
            alive = self.alive()
            return await self.send(writer, path, 200 if alive else 503, json.dumps(self.health(alive)).encode())
        self.authorize(headers, path)
        status, upstream = await self.upstream_get("/metrics")
        text = self.metrics() + (upstream.decode(errors="replace") if status == 200 else "")
        await self.send(writer, path, 200, text.encode(), "text/plain; version=0.0.4")

    async def seed(self, body: bytes) -> bytes:
        """The seed's endpoint: {"prompt"} -> {"response", "status", "time"}, as one user turn."""
        started = time.perf_counter()
        try:
            data = json.loads(body)
        except ValueError:
            raise Reject(APIError(400, "the request body is not valid JSON", code="invalid_json")) from None
        prompt = data.get("prompt") if isinstance(data, dict) else None
        if not isinstance(prompt, str) or not prompt:
            raise Reject(APIError(400, "'prompt' must be a non-empty string", code="invalid_type", param="prompt"))
        chat = {
            "messages": [{"role": "user", "content": prompt}],
            "temperature": data.get("temperature", 0.0),
            "max_tokens": data.get("max_tokens", self.options.max_tokens_limit),
        }
        self.in_flight += 1
        try:
            status, reply = await self.upstream_call("POST", "/v1/chat/completions", json.dumps(chat).encode())
        finally:
            self.in_flight -= 1
        if status != 200:
            raise Reject(APIError(status, f"llama-server: {reply[:200].decode(errors='replace')}", "server_error"))
        text = json.loads(reply)["choices"][0]["message"]["content"]
        return json.dumps({"response": text, "status": 200, "time": round(time.perf_counter() - started, 3)}).encode()

    def health(self, alive: bool) -> dict:
        o = self.options
        running = min(self.in_flight, o.parallel)
        return {
            "status": "ok" if alive else "error",
            "model": self.model,
            "engine": self.engine,
            "queue": {"waiting": self.in_flight - running, "running": running, "capacity": o.queue_size},
            "slots": {"parallel": o.parallel, "n_ctx_per_slot": o.n_ctx, "n_ctx_total": o.n_ctx * o.parallel},
        }

    def metrics(self) -> str:
        o, running = self.options, min(self.in_flight, self.options.parallel)
        gauges = (
            ("quantkit_queue_waiting", "gauge", "Requests waiting for a slot.", self.in_flight - running),
            ("quantkit_requests_running", "gauge", "Requests llama-server is generating for.", running),
            ("quantkit_queue_capacity", "gauge", "Waiting requests allowed before 429.", o.queue_size),
            ("quantkit_slots", "gauge", "Requests decoded together (llama-server -np).", o.parallel),
            ("quantkit_slot_context_tokens", "gauge", "Context (tokens) of one slot.", o.n_ctx),
            ("quantkit_requests_rejected_total", "counter", "Requests refused: queue full.", self.counters["rejected_full"]),
        )
        lines = [f"# HELP {n} {h}\n# TYPE {n} {t}\n{n} {v}" for n, t, h, v in gauges]
        lines.append("# HELP quantkit_http_responses_total HTTP responses by route and status.")
        lines.append("# TYPE quantkit_http_responses_total counter")
        lines += [f'quantkit_http_responses_total{{route="{r}",status="{s}"}} {n}' for (r, s), n in sorted(self.statuses.items())]
        return "\n".join(lines) + "\n"

    async def send_error(self, writer, path: str, error: APIError) -> None:
        await self.send(writer, path, error.status, json.dumps(error.body()).encode(), close=True)

    async def send(self, writer, path, status: int, payload: bytes, kind="application/json", close=False) -> None:
        self.statuses[(route_of(path), status)] += 1
        head = f"HTTP/1.1 {status} {REASONS.get(status, 'Error')}\r\nContent-Type: {kind}\r\n"
        head += f"Content-Length: {len(payload)}\r\n" + ("Connection: close\r\n" if close else "") + "\r\n"
        writer.write(head.encode() + payload)
        await writer.drain()


class Relay(asyncio.Protocol):
    """The upstream side of a forwarded request: its reply's head is handed to the front (which
    rewrites it), then each chunk goes to the client's transport from the callback that received
    it: no coroutine switch per streamed token, the front's whole cost on the hot path. The server's
    cores are busy generating; each wake-up of the front takes from them."""

    HIGH_WATER = 1 << 22  # bytes waiting for a slow client before reading upstream pauses

    def __init__(self, client: asyncio.Transport):
        loop = asyncio.get_running_loop()
        self.client, self.head, self.done = client, loop.create_future(), loop.create_future()
        self.pending, self.started = bytearray(), False

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if self.started:
            self.client.write(data)
            if self.client.get_write_buffer_size() > self.HIGH_WATER:
                self.transport.pause_reading()
                asyncio.get_running_loop().create_task(self._resume_when_drained())
            return
        self.pending += data
        end = self.pending.find(b"\r\n\r\n")
        if end >= 0 and not self.head.done():
            self.transport.pause_reading()  # until the front has written the rewritten head
            self.head.set_result(bytes(self.pending[: end + 4]))
            del self.pending[: end + 4]

    def start(self, head: bytes) -> None:
        """Write the rewritten head and what came after it; relay the rest as it arrives."""
        self.client.write(head + bytes(self.pending))
        self.pending, self.started = bytearray(), True
        if not self.transport.is_closing():
            self.transport.resume_reading()
        elif not self.done.done():
            self.done.set_result(None)

    async def _resume_when_drained(self) -> None:
        while self.client.get_write_buffer_size() > self.HIGH_WATER // 2 and not self.client.is_closing():
            await asyncio.sleep(0.01)
        if not self.transport.is_closing():
            self.transport.resume_reading()

    def connection_lost(self, exc) -> None:
        if not self.head.done():
            self.head.set_result(None)  # no reply head: the client's connection just closes
        if self.started and not self.done.done():
            self.done.set_result(None)


def route_of(path: str) -> str:
    return path if path in (*LOCAL, "/v1/models", *GENERATE) else "other"


def parse_head(head: bytes) -> tuple[str, str, str, dict]:
    lines = head.decode("latin-1").split("\r\n")
    method, target, version = lines[0].split(" ", 2)
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            key, value = line.split(":", 1)
            headers[key.strip().lower()] = value.strip()
    return method, target, version, headers


def dechunk(payload: bytes) -> bytes:
    out, rest = bytearray(), payload
    while rest:
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line.split(b";")[0] or b"0", 16)
        if size == 0:
            break
        out += rest[:size]
        rest = rest[size + 2 :]
    return bytes(out)
