"""One thread that owns an engine (engines are not thread-safe) and runs requests from a bounded
queue, handing tokens back to the asyncio server as they come. The queue is fair between clients:
the next request comes from the client served least recently, so one busy client cannot starve
the others; one client's requests run in arrival order.

With ``parallel`` > 1 and an engine that has ``batch_decoder`` it batches continuously (as
llama-server's slots do): up to ``parallel`` requests decode together, one engine call per step,
a new request takes a free slot at the next step, and a finished or abandoned one frees its slot
(and its KV cells) at once."""

import asyncio
import threading
import time
from collections import deque
from dataclasses import dataclass, field

from quantkit.engines.base import Engine, Token
from quantkit.engines.generate import Sampler, TextPieces


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
    prompt: str | list[int] | None = None  # text, or token ids as given (OpenAI's completions take both)
    max_tokens: int | None = None  # None: as many as the context leaves
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    ignore_eos: bool = False  # run to max_tokens (vLLM's and llama-server's extension, for benchmarks)
    client: str = "-"  # who asked (the server uses the peer address): the unit of fairness
    cancel: threading.Event = field(default_factory=threading.Event)
    events: asyncio.Queue | None = None
    loop: asyncio.AbstractEventLoop | None = None
    enqueued: float = field(default_factory=time.perf_counter)


@dataclass
class Slot:
    """One running request of the continuous batch."""

    job: Job
    prompt: list[int]
    max_tokens: int
    sampler: Sampler
    pieces: TextPieces
    fed: int = 0  # prompt tokens already in the KV cache
    count: int = 0  # tokens generated
    next_token: int | None = None  # sampled, not yet fed back


class EngineWorker:
    """Events a job receives, in order: ("start", prompt_tokens, max_tokens), ("token", Token)...,
    ("end", completion_tokens, finish_reason); or one ("error", exception) instead."""

    def __init__(self, engine: Engine, n_ctx: int, max_tokens_limit: int, queue_size: int, parallel: int = 1):
        self.engine = engine
        self.n_ctx = n_ctx
        self.parallel = parallel if parallel > 1 and hasattr(engine, "batch_decoder") else 1
        # The batch context is made up front, so /health can state the real per-slot context.
        self.batch = engine.batch_decoder(self.parallel, n_ctx) if self.parallel > 1 else None
        if self.batch is not None:
            self.n_ctx = min(n_ctx, self.batch.n_ctx_seq)
        self.max_tokens_limit = max_tokens_limit
        self.queue_size = queue_size
        self._ready = threading.Condition()
        self._lanes: dict[str, deque] = {}  # client -> its waiting jobs, oldest first
        self._last_served: dict[str, int] = {}  # client -> sequence number of its last job
        self._served = 0
        self._stopping = False
        self._admitted = 0  # running + waiting; released before a job's last event goes out
        self.running = 0
        self._pending: list[tuple[Job, tuple]] = []  # events of this step, handed over together
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
            if self._admitted >= self.queue_size + self.parallel:
                self.counters["rejected_full"] += 1
                raise QueueFull()
            self._admitted += 1
            self._lanes.setdefault(job.client, deque()).append(job)
            self._ready.notify()
        return job.events

    def _next(self, block: bool = True) -> Job | None:
        """The oldest job of the client served least recently (never-served clients first);
        None when stopping (or, with ``block`` false, when nothing waits)."""
        with self._ready:
            while block and not self._lanes and not self._stopping:
                self._ready.wait()
            if self._stopping or not self._lanes:
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
        if self.batch is not None and not self._thread.is_alive():
            self.batch.close()

    def _emit(self, job: Job, *event) -> None:
        self._pending.append((job, event))

    def _flush(self) -> None:
        """Hand the events gathered so far to the event loop in one call: one wake-up of the loop
        per decode step instead of one per token and request."""
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        by_loop: dict = {}
        for job, event in pending:
            by_loop.setdefault(job.loop, []).append((job.events, event))
        for loop, items in by_loop.items():
            try:
                loop.call_soon_threadsafe(_deliver, items)
            except RuntimeError:  # the event loop is gone (server shutting down)
                for job, _ in pending:
                    job.cancel.set()

    def _serve(self) -> None:
        if self.batch is not None:
            return self._serve_batched()
        while True:
            self._flush()
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

    def _prepare(self, job: Job) -> tuple[list[int], int]:
        """The prompt ids and the max_tokens that fit; emits "start"."""
        engine = self.engine
        if job.messages is not None:
            ids = engine.chat_prompt(job.messages)
        elif isinstance(job.prompt, list):
            ids = list(job.prompt)
            n_vocab = getattr(engine, "n_vocab", None)
            if n_vocab is not None and max(ids) >= n_vocab:
                raise RequestRejected(
                    f"token id {max(ids)} is out of range: this model's ids are 0 to {n_vocab - 1}",
                    code="invalid_value",
                    param="prompt",
                )
        else:
            ids = engine.tokenize(job.prompt, add_special=True)
        room = self.n_ctx - len(ids)
        if room < 1:
            raise RequestRejected(
                f"the prompt has {len(ids)} tokens; this server's context is {self.n_ctx} tokens",
                code="context_length_exceeded",
                param="messages" if job.messages is not None else "prompt",
            )
        max_tokens = min(job.max_tokens or self.max_tokens_limit, self.max_tokens_limit, room)
        self._emit(job, "start", len(ids), max_tokens)
        self.counters["prompt_tokens"] += len(ids)
        return ids, max_tokens

    def _run(self, job: Job) -> tuple:
        engine = self.engine
        ids, max_tokens = self._prepare(job)
        self._flush()
        count = 0
        tokens = engine.stream(
            ids, max_tokens, temperature=job.temperature, top_p=job.top_p, seed=job.seed, ignore_eos=job.ignore_eos
        )
        try:
            for token in tokens:
                count += 1
                self._emit(job, "token", token)
                self._flush()
                if job.cancel.is_set():  # client gone or a stop string matched
                    break
        finally:
            close = getattr(tokens, "close", None)
            if close:
                close()
            self.counters["completion_tokens"] += count
        return ("end", count, "length" if count >= max_tokens else "stop")

    def _serve_batched(self) -> None:
        """The continuous-batching loop: admit into free slots, one decode for all, sample each."""
        batch, slots, free = self.batch, {}, list(range(self.parallel))
        budget = batch.max_batch_tokens or float("inf")
        decode, eos = _row_decoder(batch), self.engine.eos_ids
        while True:
            while free:  # new requests join at the next step
                self._flush()  # before _next may block
                job = self._next(block=not slots)
                if job is None:
                    break
                if job.cancel.is_set():
                    self.counters["cancelled"] += 1
                    self._release()
                    self._emit(job, "error", RequestRejected("the client went away", code="cancelled"))
                    continue
                try:
                    ids, max_tokens = self._prepare(job)
                except Exception as exc:
                    self._release()
                    self._emit(job, "error", exc)
                    continue
                slots[free.pop(0)] = Slot(
                    job, ids, max_tokens, Sampler(job.temperature, job.top_p, job.seed), TextPieces(self.engine)
                )
                self.running = len(slots)
            self._flush()  # "start" goes out before the prefill, not after it
            if self._stopping:
                return
            if not slots:
                continue
            # Decode tokens first (one each), then one joining prompt's chunk in what the batch has
            # left, so a long prompt never stalls the others for more than one step. One prompt per
            # step, oldest slot first: when several join at once (prefill is compute-bound) the
            # first gets its first token after one prefill instead of after all of them.
            feeds, want, room, joining = {}, set(), budget, None
            for seq, slot in slots.items():
                if slot.next_token is not None:
                    feeds[seq] = [slot.next_token]
                    want.add(seq)
                    room -= 1
                elif joining is None:
                    joining = seq
            if joining is not None and room > 0:
                slot = slots[joining]
                feeds[joining] = slot.prompt[slot.fed : slot.fed + int(min(room, len(slot.prompt)))]
                if slot.fed + len(feeds[joining]) >= len(slot.prompt):
                    want.add(joining)  # only the prompt's last chunk needs a logits row
            try:
                seqs, rows = decode(feeds, want)
            except Exception as exc:  # fail the requests of this step, keep serving
                for seq in feeds:
                    self._finish(slots, free, seq, ("error", exc))
                continue
            if joining in feeds:
                slots[joining].fed += len(feeds[joining])
            # Greedy rows: one vectorized argmax over the logits view; others sample their own row.
            best = rows.argmax(axis=1).tolist() if len(seqs) else []
            for k, seq in enumerate(seqs):
                slot = slots[seq]
                token = best[k] if slot.sampler.greedy else slot.sampler(rows[k])
                if token in eos and not slot.job.ignore_eos:
                    self._finish(slots, free, seq, ("end", slot.count, "stop"))
                    continue
                slot.count += 1
                self._emit(slot.job, "token", Token(token, slot.pieces.add(token)))
                if slot.count >= slot.max_tokens:
                    self._finish(slots, free, seq, ("end", slot.count, "length"))
                elif slot.job.cancel.is_set():  # client gone or a stop string matched
                    self._finish(slots, free, seq, ("end", slot.count, "stop"))
                else:
                    slot.next_token = token
            for seq in [s for s, slot in slots.items() if slot.job.cancel.is_set()]:
                self._finish(slots, free, seq, ("end", slots[seq].count, "stop"))

    def _finish(self, slots: dict, free: list, seq: int, last: tuple) -> None:
        slot = slots.pop(seq)
        self.batch.free(seq)
        free.append(seq)
        free.sort()
        self.running = len(slots)
        self.counters["completion_tokens"] += slot.count
        self._release()  # the place is free before the client hears "done"
        self._emit(slot.job, *last)


def _deliver(items: list) -> None:
    """On the event loop: put one step's events on their requests' queues."""
    for events, event in items:
        events.put_nowait(event)


def _row_decoder(batch):
    """``batch.decode`` (seqs, logits rows), or the same made from ``batch.step``'s dict."""
    if hasattr(batch, "decode"):
        return batch.decode
    import numpy as np

    def decode(feeds, want):
        out = batch.step(feeds)
        seqs = [seq for seq in out if seq in want]
        return seqs, np.stack([np.asarray(out[seq]) for seq in seqs]) if seqs else np.empty((0, 0), np.float32)

    return decode
