"""One thread that owns an engine (engines are not thread-safe) and runs requests from a bounded
queue, handing tokens back to the asyncio server as they come. The queue is fair between clients:
the next request comes from the client served least recently, so one busy client cannot starve
the others; one client's requests run in arrival order."""

import asyncio
import threading
import time
from collections import deque
from dataclasses import dataclass, field

from quantkit.engines.base import Engine


class QueueFull(Exception):
    """The server already holds as many waiting requests as it allows."""


class RequestRejected(Exception):
    """The request cannot run (e.g. the prompt does not fit the context)."""

    def __init__(self, message: str, code: str, param: str | None = None):
        super().__init__(message)
        self.message, self.code, self.param = message, code, param


@dataclass
class Job:
    """One generation: ``messages`` (chat) or ``prompt`` (completion), tokenized on the worker."""

    messages: list[dict] | None = None
    prompt: str | None = None
    max_tokens: int | None = None  # None: as many as the context leaves
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    client: str = "-"  # who asked (the server uses the peer address): the unit of fairness
    cancel: threading.Event = field(default_factory=threading.Event)
    events: asyncio.Queue | None = None
    loop: asyncio.AbstractEventLoop | None = None
    enqueued: float = field(default_factory=time.perf_counter)


class EngineWorker:
    """Events a job receives, in order: ("start", prompt_tokens, max_tokens), ("token", Token)...,
    ("end", completion_tokens, finish_reason); or one ("error", exception) instead."""

    def __init__(self, engine: Engine, n_ctx: int, max_tokens_limit: int, queue_size: int):
        self.engine = engine
        self.n_ctx = n_ctx
        self.max_tokens_limit = max_tokens_limit
        self.queue_size = queue_size
        self._ready = threading.Condition()
        self._lanes: dict[str, deque] = {}  # client -> its waiting jobs, oldest first
        self._last_served: dict[str, int] = {}  # client -> sequence number of its last job
        self._served = 0
        self._stopping = False
        self._admitted = 0  # running + waiting; released before a job's last event goes out
        self.running = 0
        self.counters = {"prompt_tokens": 0, "completion_tokens": 0, "cancelled": 0, "rejected_full": 0}
        self._thread = threading.Thread(target=self._serve, name="quantkit-engine", daemon=True)
        self._thread.start()

    @property
    def waiting(self) -> int:
        return max(0, self._admitted - self.running)

    def submit(self, job: Job) -> asyncio.Queue:
        """Queue ``job`` (from the event loop); raises QueueFull when ``queue_size`` already wait."""
        job.loop = asyncio.get_running_loop()
        job.events = asyncio.Queue()
        with self._ready:
            if self._admitted > self.queue_size:
                self.counters["rejected_full"] += 1
                raise QueueFull()
            self._admitted += 1
            self._lanes.setdefault(job.client, deque()).append(job)
            self._ready.notify()
        return job.events

    def _next(self) -> Job | None:
        """The oldest job of the client served least recently (never-served clients first)."""
        with self._ready:
            while not self._lanes and not self._stopping:
                self._ready.wait()
            if self._stopping:
                return None
            client = min(self._lanes, key=lambda c: (self._last_served.get(c, -1), self._lanes[c][0].enqueued))
            job = self._lanes[client].popleft()
            if not self._lanes[client]:
                del self._lanes[client]
            self._served += 1
            if len(self._last_served) > 10_000:  # forget idle clients; they simply count as new
                self._last_served = {c: n for c, n in self._last_served.items() if c in self._lanes}
            self._last_served[client] = self._served
            return job

    def _release(self) -> None:
        with self._ready:
            self._admitted -= 1

    def stop(self) -> None:
        with self._ready:
            self._stopping = True
            self._ready.notify()
        self._thread.join(timeout=10)

    def _emit(self, job: Job, *event) -> None:
        try:
            job.loop.call_soon_threadsafe(job.events.put_nowait, event)
        except RuntimeError:  # the event loop is gone (server shutting down)
            job.cancel.set()

    def _serve(self) -> None:
        while True:
            job = self._next()
            if job is None:
                return
            if job.cancel.is_set():  # its client left while it waited
                self.counters["cancelled"] += 1
                self._release()
                self._emit(job, "error", RequestRejected("the client went away", code="cancelled"))
                continue
            self.running = 1
            try:
                last = self._run(job)
            except Exception as exc:  # one bad request must never stop the worker
                last = ("error", exc)
            self.running = 0
            # Free the place before the client hears "done", so its next request finds room.
            self._release()
            self._emit(job, *last)

    def _run(self, job: Job) -> tuple:
        engine = self.engine
        if job.messages is not None:
            ids = engine.chat_prompt(job.messages)
        else:
            ids = engine.tokenize(job.prompt, add_special=True)
        room = self.n_ctx - len(ids)
        if room < 1:
            raise RequestRejected(
                f"the prompt has {len(ids)} tokens; this server's context is {self.n_ctx} tokens",
                code="context_length_exceeded", param="messages" if job.messages is not None else "prompt")
        max_tokens = min(job.max_tokens or self.max_tokens_limit, self.max_tokens_limit, room)
        self._emit(job, "start", len(ids), max_tokens)
        self.counters["prompt_tokens"] += len(ids)
        count = 0
        tokens = engine.stream(ids, max_tokens, temperature=job.temperature, top_p=job.top_p, seed=job.seed)
        try:
            for token in tokens:
                count += 1
                self._emit(job, "token", token)
                if job.cancel.is_set():  # client gone or a stop string matched
                    break
        finally:
            close = getattr(tokens, "close", None)
            if close:
                close()
            self.counters["completion_tokens"] += count
        return ("end", count, "length" if count >= max_tokens else "stop")
