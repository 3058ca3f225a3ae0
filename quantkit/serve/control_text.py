"""Chat messages that hold a control token's text (a user who types ``<|im_end|><|im_start|>system``):
llama-server and vLLM render the chat template and parse control tokens in the whole prompt, so that
text would become real turn markers. For those requests only (every other request passes through
untouched), the front builds the prompt's ids as quantkit's own engines do (engines/chat_tokens.py):
the template's pieces parse control tokens, the messages' text does not (for a GGUF through
llama-server's /apply-template and /tokenize, for a transformers folder with its own tokenizer
here), sends the ids to /v1/completions and answers in the chat format."""

import asyncio
import json
import re
import time
from pathlib import Path

from quantkit.serve.openai_api import APIError

CHAT = ("/v1/chat/completions", "/chat/completions")
# llama.cpp parses these token types in text when asked to (llama-vocab.cpp: CONTROL, USER_DEFINED, UNKNOWN).
PARSED_TYPES = (2, 3, 4)


class ControlText:
    def __init__(self, texts: list[str], ids_of=None):
        texts = sorted({t for t in texts if t}, key=len, reverse=True)
        self.pattern = re.compile("|".join(map(re.escape, texts))) if texts else None
        self.ids_of = ids_of  # messages -> prompt ids, built here; None: asked of llama-server

    @classmethod
    def for_server(cls, settings) -> "ControlText | None":
        """From what the server runs: a GGUF's vocabulary, or a transformers folder's tokenizer."""
        gguf, model = getattr(settings, "gguf", None), getattr(settings, "model", None)
        if gguf:
            return cls.of_gguf(gguf)
        return cls.of_folder(Path(model)) if model and Path(model).is_dir() else None

    @classmethod
    def of_folder(cls, folder: Path) -> "ControlText":
        """A transformers folder's added tokens (its tokenizer, vLLM's included, parses them in any
        text); the prompt ids are built here with that tokenizer."""
        from transformers import AutoTokenizer

        from quantkit.engines.chat_tokens import tokenizer_chat_ids

        tokenizer = AutoTokenizer.from_pretrained(folder)
        if not tokenizer.chat_template:
            return cls([])
        texts = [t.content for t in getattr(tokenizer, "added_tokens_decoder", {}).values()]
        return cls(texts, ids_of=lambda messages: tokenizer_chat_ids(tokenizer, messages))

    @classmethod
    def of_gguf(cls, gguf: Path) -> "ControlText":
        """The control tokens' texts from the GGUF's own vocabulary."""
        from gguf import GGUFReader

        reader = GGUFReader(gguf)
        tokens, types = reader.fields["tokenizer.ggml.tokens"], reader.fields.get("tokenizer.ggml.token_type")
        if types is None:
            return cls([])
        wanted = [n for n, i in enumerate(types.data) if int(types.parts[i][0]) in PARSED_TYPES]
        return cls([bytes(tokens.parts[tokens.data[n]]).decode("utf-8", "replace") for n in wanted])

    def applies(self, path: str, body: bytes) -> bool:
        """Does this chat request's text hold a control token's text?"""
        if self.pattern is None or path not in CHAT:
            return False
        messages = json.loads(body).get("messages")
        return isinstance(messages, list) and any(self.pattern.search(text_of(m)) for m in messages if isinstance(m, dict))


def text_of(message: dict) -> str:
    content = message.get("content")
    if isinstance(content, list):  # OpenAI content parts: their text, in order
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return content if isinstance(content, str) else ""


async def serve_as_text(front, writer, path: str, body: bytes) -> None:
    """Answer a chat request whose messages hold control-token text, the text kept plain."""
    from quantkit.core.errors import InputError

    data = json.loads(body)
    if data.get("tools") or data.get("functions"):
        message = "tool calls with messages holding control-token text are not supported; remove the markup from the messages"
        raise APIError(400, message, code="unsupported_value", param="messages")
    messages = [{**m, "content": text_of(m)} for m in data["messages"]]
    front.in_flight += 1
    try:
        try:
            if front.control_text.ids_of is not None:
                ids = front.control_text.ids_of(messages)
            else:
                ids = await llama_server_ids(front, messages)
        except InputError as exc:
            raise APIError(400, f"{exc} ({exc.hint})", code="invalid_value", param="messages") from None
        completion = {k: v for k, v in data.items() if k not in ("messages", "max_completion_tokens")}
        if data.get("max_completion_tokens") is not None:  # the chat API's name for it; completions know max_tokens
            completion["max_tokens"] = data["max_completion_tokens"]
        completion |= {"prompt": ids, "model": front.model}
        await relay_as_chat(front, writer, path, json.dumps(completion).encode(), bool(data.get("stream")))
    finally:
        front.in_flight -= 1


async def llama_server_ids(front, messages: list[dict]) -> list[int]:
    """The prompt ids from llama-server: its rendering of the template, then each piece tokenized
    with control tokens parsed (template) or not (the messages' text)."""
    from quantkit.engines.chat_tokens import chat_pieces

    status, reply = await front.upstream_call("POST", "/apply-template", json.dumps({"messages": messages}).encode())
    if status != 200:
        raise APIError(status, f"llama-server: {reply[:200].decode(errors='replace')}", "server_error")
    ids: list[int] = []
    for n, (text, is_template) in enumerate(chat_pieces(json.loads(reply)["prompt"], messages)):
        ask = {"content": text, "add_special": n == 0, "parse_special": is_template}
        status, reply = await front.upstream_call("POST", "/tokenize", json.dumps(ask).encode())
        ids += json.loads(reply)["tokens"]
    return ids


async def relay_as_chat(front, writer, path: str, body: bytes, stream: bool) -> None:
    """POST ``body`` to the server's /v1/completions; write its reply as a chat completion."""
    up_reader, up_writer = await front.upstream_open("POST", "/v1/completions", body)
    try:
        head = await up_reader.readuntil(b"\r\n\r\n")
        status, chunked = int(head.split(b" ", 2)[1]), b"transfer-encoding: chunked" in head.lower()
        front.statuses[(path, status)] += 1
        if status != 200 or not stream:
            payload = b"".join([part async for part in body_parts(up_reader, chunked)])
            if status == 200:
                payload = json.dumps(chat_reply(json.loads(payload))).encode()
            head = f"HTTP/1.1 {status} {'OK' if status == 200 else 'Error'}\r\nContent-Type: application/json\r\n"
            writer.write(f"{head}Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n".encode() + payload)
            await writer.drain()
            return
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\nConnection: close\r\n\r\n"
        )
        pending, first = b"", True
        async for part in body_parts(up_reader, chunked):
            pending += part
            while b"\n\n" in pending:
                event, pending = pending.split(b"\n\n", 1)
                for line in event.split(b"\n"):
                    if not line.startswith(b"data: "):
                        continue
                    data = line[6:].strip()
                    if data != b"[DONE]":
                        data = json.dumps(chat_chunk(json.loads(data), first)).encode()
                        first = False
                    writer.write(b"data: " + data + b"\n\n")
            await writer.drain()  # a client that left raises here: the upstream closes, llama-server frees the slot
    finally:
        up_writer.close()


async def body_parts(reader: asyncio.StreamReader, chunked: bool):
    """The response body as it arrives (HTTP/1.1 chunked transfer or until the connection closes)."""
    if not chunked:
        while data := await reader.read(65536):
            yield data
        return
    while size := int((await reader.readline()).split(b";")[0].strip() or b"0", 16):
        yield await reader.readexactly(size)
        await reader.readline()


def chat_chunk(chunk: dict, first: bool) -> dict:
    """A /v1/completions stream chunk as a chat.completion.chunk (the first one carries the role)."""
    choices = []
    for c in chunk.get("choices", []):
        delta = ({"role": "assistant"} if first else {}) | ({"content": c["text"]} if c.get("text") else {})
        choices.append({"index": c.get("index", 0), "delta": delta, "finish_reason": c.get("finish_reason")})
    return {**chunk, "object": "chat.completion.chunk", "choices": choices, "created": chunk.get("created", int(time.time()))}


def chat_reply(reply: dict) -> dict:
    choices = [
        {
            "index": c.get("index", 0),
            "message": {"role": "assistant", "content": c.get("text", "")},
            "finish_reason": c.get("finish_reason"),
        }
        for c in reply.get("choices", [])
    ]
    return {**reply, "object": "chat.completion", "choices": choices}
