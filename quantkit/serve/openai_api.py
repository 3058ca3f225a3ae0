"""The OpenAI API's request checking and error shape for quantkit serve: every field's type and
range is checked here, so nothing malformed reaches the engine."""

from quantkit.serve.worker import Job

ROLES = {"system", "user", "assistant", "developer", "tool"}


class APIError(Exception):
    def __init__(
        self, status: int, message: str, type_: str = "invalid_request_error", code: str | None = None, param: str | None = None
    ):
        super().__init__(message)
        self.status, self.message, self.type, self.code, self.param = status, message, type_, code, param

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def field(body: dict, name: str, kind: type, default=None, lo=None, hi=None):
    value = body.get(name)
    if value is None:
        return default
    ok = isinstance(value, kind) and not (isinstance(value, bool) and kind is not bool)
    if kind is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not ok:
        raise APIError(400, f"'{name}' must be of type {kind.__name__}", code="invalid_type", param=name)
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        bounds = " and ".join(f"{word} {bound}" for word, bound in (("at least", lo), ("at most", hi)) if bound is not None)
        raise APIError(400, f"'{name}' must be {bounds}, got {value}", code="invalid_value", param=name)
    return value


def unencodable_field(value, where: str = "") -> str | None:
    """The path (e.g. ``messages[1].content``) of the first string in a parsed JSON body that is
    not valid Unicode (a lone UTF-16 surrogate such as "\\ud800"), or None. JSON allows it;
    no tokenizer can encode it."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return where or "body"
        return None
    if isinstance(value, dict):
        items = ((f"{where}.{k}" if where else str(k), v) for k, v in value.items())
    elif isinstance(value, list):
        items = ((f"{where}[{i}]", v) for i, v in enumerate(value))
    else:
        return None
    for path, item in items:
        if (found := unencodable_field(item, path)) is not None:
            return found
    return None


def _text_content(content, where: str) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts: only text can be served by a text model
        parts = []
        for part in content:
            if not (isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str)):
                raise APIError(400, f"{where}: only text content parts are supported", param="messages")
            parts.append(part["text"])
        return "".join(parts)
    raise APIError(400, f"{where}: 'content' must be a string or a list of text parts", code="invalid_type", param="messages")


def messages_from(body: dict) -> list[dict]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise APIError(400, "'messages' must be a non-empty list", code="invalid_type", param="messages")
    out = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ROLES:
            raise APIError(400, f"messages[{i}] needs a 'role' among {sorted(ROLES)}", param="messages")
        role = "system" if message["role"] == "developer" else message["role"]
        content = message.get("content")
        out.append(
            {"role": role, "content": "" if content is None and role == "assistant" else _text_content(content, f"messages[{i}]")}
        )
    return out


def stops_from(body: dict) -> list[str]:
    stop = body.get("stop")
    stops = [stop] if isinstance(stop, str) else stop if stop is not None else []
    if not isinstance(stops, list) or len(stops) > 4 or not all(isinstance(s, str) and s for s in stops):
        raise APIError(400, "'stop' must be a string or a list of at most 4 non-empty strings", param="stop")
    return stops


def job_from(body: dict, limit: int, **what) -> Job:
    max_tokens = field(body, "max_completion_tokens", int) or field(body, "max_tokens", int)
    if max_tokens is not None and not 1 <= max_tokens <= limit:
        raise APIError(
            400,
            f"'max_tokens' must be between 1 and {limit} on this server, got {max_tokens}",
            code="invalid_value",
            param="max_tokens",
        )
    if field(body, "n", int, 1) != 1:
        raise APIError(400, "only n=1 is supported", param="n")
    return Job(
        max_tokens=max_tokens,
        temperature=field(body, "temperature", float, 1.0, 0, 2),
        top_p=field(body, "top_p", float, 1.0, 0, 1),
        seed=seed_from(body),
        ignore_eos=field(body, "ignore_eos", bool, False),
        **what,
    )


def seed_from(body: dict) -> int | None:
    """A negative seed means "random", as llama-server reads -1."""
    seed = field(body, "seed", int, None, hi=2**64 - 1)
    return None if seed is None or seed < 0 else seed


class StopMatcher:
    """Cuts generated text at the first stop string, holding back a tail that may begin one."""

    def __init__(self, stops: list[str]):
        self.stops, self.pending, self.hit = stops, "", False

    def feed(self, text: str) -> str:
        if not self.stops:
            return text
        self.pending += text
        found = [i for i in (self.pending.find(s) for s in self.stops) if i >= 0]
        if found:
            self.hit, out, self.pending = True, self.pending[: min(found)], ""
            return out
        keep = max(
            (k for s in self.stops for k in range(1, min(len(s), len(self.pending) + 1)) if self.pending.endswith(s[:k])),
            default=0,
        )
        cut = len(self.pending) - keep
        out, self.pending = self.pending[:cut], self.pending[cut:]
        return out

    def flush(self) -> str:
        out, self.pending = self.pending, ""
        return out
