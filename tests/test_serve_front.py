"""quantkit's front before llama-server (quantkit.serve.front), against a stand-in upstream that
streams SSE the way llama-server does: bytes pass through untouched, and the front's own part
(API key, body limit, model name, max_tokens, 429 beyond the slots and queue, /health, /metrics,
the page, a client that leaves) behaves as quantkit's in-process server does."""

import asyncio
import json
from dataclasses import dataclass

import httpx
import pytest

from quantkit.serve.front import Front

KEY = "front-key"


@dataclass
class Options:
    parallel: int = 1
    queue_size: int = 1
    n_ctx: int = 512
    max_tokens_limit: int = 64
    max_body_bytes: int = 4096


class Upstream:
    """A stand-in llama-server: streams ``chunks`` SSE events ``delay`` s apart; records requests."""

    def __init__(self, chunks=3, delay=0.0):
        self.chunks, self.delay, self.bodies, self.closed = chunks, delay, [], asyncio.Event()

    async def handle(self, reader, writer):
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length"))
        body = await reader.readexactly(length)
        self.bodies.append((head.split(b" ")[1].decode(), head, body))
        if b"/metrics" in head.split(b"\r\n")[0]:
            text = b"llamacpp:tokens_predicted_total 7\n"
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(text) + text)
            await writer.drain()
            writer.close()
            return
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\nKeep-Alive: x\r\n\r\n")
        try:
            for i in range(self.chunks):
                event = b'data: {"choices":[{"delta":{"content":"t%d"}}]}\n\n' % i
                writer.write(b"%x\r\n%s\r\n" % (len(event), event))
                await writer.drain()
                await asyncio.sleep(self.delay)
            writer.write(b"e\r\ndata: [DONE]\n\n\r\n0\r\n\r\n")
            await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()
            self.closed.set()


async def running(upstream: Upstream, options=None, api_key=KEY):
    up = await asyncio.start_server(upstream.handle, "127.0.0.1", 0)
    front = Front(("127.0.0.1", up.sockets[0].getsockname()[1]), options or Options(), "smol", b"<!doctype html>smol", api_key)
    server = await asyncio.start_server(front.handle, "127.0.0.1", 0)
    return front, f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}", (up, server)


def chat(**extra):
    return {"model": "smol", "messages": [{"role": "user", "content": "hi"}], "stream": True, **extra}


def test_front_passes_streams_through_and_checks_what_llama_server_does_not():
    async def main():
        upstream = Upstream()
        front, url, _ = await running(upstream)
        auth = {"Authorization": f"Bearer {KEY}"}
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            reply = await client.post("/v1/chat/completions", json=chat(), headers=auth)
            assert reply.status_code == 200 and reply.text.count("data:") == 4 and reply.text.endswith("[DONE]\n\n")
            sent = json.loads(upstream.bodies[-1][2])
            assert sent["max_tokens"] == 64  # an omitted max_tokens means up to the limit, as in-process
            assert b"Connection: close" in upstream.bodies[-1][1]
            no_key = await client.post("/v1/chat/completions", json=chat())
            assert no_key.status_code == 401 and "API key" in no_key.json()["error"]["message"]
            too_big = await client.post("/v1/chat/completions", content=b"x" * 5000, headers=auth)
            assert too_big.status_code == 413
            wrong = await client.post("/v1/chat/completions", json=chat(model="other"), headers=auth)
            assert wrong.status_code == 404 and wrong.json()["error"]["code"] == "model_not_found"
            over = await client.post("/v1/chat/completions", json=chat(max_tokens=65), headers=auth)
            assert over.status_code == 400 and over.json()["error"]["param"] == "max_tokens"
            health = (await client.get("/health")).json()
            assert health["engine"] == "llama-server" and health["queue"] == {"waiting": 0, "running": 0, "capacity": 1}
            page = await client.get("/")
            assert page.status_code == 200 and page.headers["content-type"].startswith("text/html") and "smol" in page.text
            assert (await client.get("/metrics")).status_code == 401
            metrics = (await client.get("/metrics", headers=auth)).text
            assert "quantkit_slots 1" in metrics and "llamacpp:tokens_predicted_total 7" in metrics
            assert 'quantkit_http_responses_total{route="/v1/chat/completions",status="200"} 1' in metrics
        assert len(upstream.bodies) == 2  # one chat and one /metrics reached llama-server; the refused ones did not

    asyncio.run(main())


def test_front_refuses_beyond_slots_and_queue_and_frees_a_left_slot():
    async def main():
        upstream = Upstream(chunks=200, delay=0.02)
        front, url, _ = await running(upstream, api_key=None)
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            first = asyncio.create_task(client.post("/v1/chat/completions", json=chat()))
            second = asyncio.create_task(client.post("/v1/chat/completions", json=chat()))
            while front.in_flight < 2:
                await asyncio.sleep(0.01)
            health = (await client.get("/health")).json()["queue"]
            assert health == {"waiting": 1, "running": 1, "capacity": 1}
            refused = await client.post("/v1/chat/completions", json=chat())
            assert refused.status_code == 429 and "busy" in refused.json()["error"]["message"]
            first.cancel()
            second.cancel()
            await asyncio.gather(first, second, return_exceptions=True)
        # The clients left mid-stream: the front closed llama-server's connections and counts nothing in flight.
        await asyncio.wait_for(upstream.closed.wait(), 10)
        deadline = asyncio.get_running_loop().time() + 10
        while front.in_flight and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
        assert front.in_flight == 0

    asyncio.run(main())


@pytest.mark.parametrize("path", ["/v1/models", "/v1/completions"])
def test_front_forwards_other_routes_with_the_key_checked(path):
    async def main():
        upstream = Upstream(chunks=1)
        _, url, _ = await running(upstream)
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            assert (await client.get(path)).status_code == 401
            body = {"model": "smol", "prompt": "hi", "stream": True}
            reply = await client.post(path, json=body, headers={"Authorization": f"Bearer {KEY}"})
            assert reply.status_code == 200 and upstream.bodies[-1][0] == path

    asyncio.run(main())
