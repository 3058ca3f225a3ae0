"""One request's answer in OpenAI's shapes: the worker's events read as text pieces (stop strings
cut, as the engine produced them), then either one JSON completion or a stream of SSE chunks
(chat.completion.chunk / text_completion), with usage."""

import asyncio
import json
import time
import uuid

from quantkit.core.errors import InputError, QuantkitError
from quantkit.serve.openai_api import APIError, StopMatcher
from quantkit.serve.worker import Job, RequestRejected


async def pieces(events: asyncio.Queue, job: Job, stops: list[str]):
    """Lists of text pieces (text, count, None) of a started job, the last list ending with
    (None, completion_tokens, finish_reason). Every event already queued is read at once, so a
    reader that fell behind catches up with one write instead of one per token."""
    matcher, count = StopMatcher(stops), 0
    while True:
        batch = [await events.get()]
        while not events.empty():
            batch.append(events.get_nowait())
        out = []
        for event in batch:
            if event[0] == "token":
                count += 1
                text = matcher.feed(event[1].text)
                if text:
                    out.append((text, count, None))
                if matcher.hit:
                    job.cancel.set()  # the worker stops after its current token
                    out.append((None, count, "stop"))
                    yield out
                    return
            elif event[0] == "end":
                if rest := matcher.flush():
                    out.append((rest, count, None))
                out.append((None, count, event[2]))
                yield out
                return
            else:
                if out:
                    yield out
                raise api_error(event[1])
        if out:
            yield out


async def cancel_on_disconnect(receive, job: Job) -> None:
    """Once the body is read, the next ASGI message is the client's disconnect."""
    while not job.cancel.is_set():
        if (await receive())["type"] == "http.disconnect":
            job.cancel.set()
            return
        await asyncio.sleep(0.05)  # never spin, whatever the server hands us


def api_error(exc: Exception) -> APIError:
    """The OpenAI-shaped error for what the worker reported."""
    if isinstance(exc, RequestRejected):
        return APIError(400, exc.message, code=exc.code, param=exc.param)
    if isinstance(exc, QuantkitError):
        return APIError(
            400 if isinstance(exc, InputError) else 500,
            str(exc),
            type_="server_error" if not isinstance(exc, InputError) else "invalid_request_error",
        )
    return APIError(500, f"the engine failed: {type(exc).__name__}: {exc}", type_="server_error")


class Completion:
    """The response of one chat (``chat``) or text completion of ``model``."""

    def __init__(self, model: str, chat: bool, prompt_tokens: int):
        self.chat, self.prompt_tokens = chat, prompt_tokens
        self.head = {
            "id": f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex[:24]}",
            "object": "chat.completion" if chat else "text_completion",
            "created": int(time.time()),
            "model": model,
        }
        self.chunk_object = "chat.completion.chunk" if chat else "text_completion"
        # A text chunk is the same JSON every time but for its text: dump it once, with a marker
        # ("\x00", which json.dumps writes as \u0000) where each token's text goes.
        self.before, self.after = self.chunk("\x00", None).split(json.dumps("\x00"))

    def usage(self, count: int) -> dict:
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": count, "total_tokens": self.prompt_tokens + count}

    def whole(self, text: str, finish: str, count: int) -> dict:
        """The non-streamed completion."""
        choice = (
            {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}
            if self.chat
            else {"index": 0, "text": text, "logprobs": None, "finish_reason": finish}
        )
        return {**self.head, "choices": [choice], "usage": self.usage(count)}

    def chunk(self, text, finish, first: bool = False) -> str:
        if self.chat:
            delta = {"role": "assistant", "content": ""} if first else ({"content": text} if text else {})
            choice = {"index": 0, "delta": delta, "finish_reason": finish}
        else:
            choice = {"index": 0, "text": text or "", "logprobs": None, "finish_reason": finish}
        return f"data: {json.dumps({**self.head, 'object': self.chunk_object, 'choices': [choice]})}\n\n"

    def text_chunk(self, text, finish) -> str:
        return self.before + json.dumps(text) + self.after if text and finish is None else self.chunk(text, finish)

    async def sse(self, events: asyncio.Queue, job: Job, stops: list[str], with_usage: bool):
        """The SSE events of a started job, ``[DONE]`` last; the engine is freed when it ends,
        also when the client went away."""
        try:
            count = 0
            if self.chat:
                yield self.chunk(None, None, first=True)
            async for items in pieces(events, job, stops):
                # One write for all the chunks that are ready (each its own SSE event).
                yield "".join(self.text_chunk(text, finish) for text, _, finish in items)
                count = items[-1][1]
            if with_usage:
                last = {**self.head, "object": self.chunk_object, "choices": [], "usage": self.usage(count)}
                yield f"data: {json.dumps(last)}\n\n"
            yield "data: [DONE]\n\n"
        except APIError as exc:  # the engine failed after the headers went out
            yield f"data: {json.dumps(exc.body())}\n\n"
        finally:
            job.cancel.set()
