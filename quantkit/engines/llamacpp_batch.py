"""Several sequences in one llama.cpp context, decoded together (as llama-server's slots): each
sequence has its own seq id and its own KV cells, one ``llama_decode`` call advances them all,
and a finished sequence's cells are freed at once so the next request can take its place."""

import ctypes

from quantkit.core.errors import EngineError, InputError


class LlamaCppBatch:
    """``n_seq`` sequences of up to ``n_ctx_seq`` tokens each, over ``engine``'s loaded model."""

    def __init__(self, engine, n_seq: int, n_ctx_seq: int, n_batch: int = 512):
        from llama_cpp import _internals

        lc = self.llama_cpp = engine.llama_cpp
        self.np = engine.np
        self.n_vocab = engine.n_vocab
        self.n_seq, self.max_batch_tokens = n_seq, n_batch
        base = engine.llm.context_params
        params = type(base).from_buffer_copy(base)  # same threads, types and flags as the engine's own
        params.n_seq_max = n_seq
        params.n_ctx = n_ctx_seq * n_seq
        params.n_batch = params.n_ubatch = n_batch
        # One KV stream per sequence: faster than a unified buffer when prompts share no prefix
        # (llama.h's own advice), and each sequence gets exactly n_ctx / n_seq cells.
        params.kv_unified = False
        try:
            self.ctx = _internals.LlamaContext(model=engine.llm._model, params=params, verbose=False)
        except ValueError as exc:
            raise EngineError(
                f"llama.cpp could not make a context for {n_seq} sequences x {n_ctx_seq} tokens: {exc}",
                hint="lower `parallel` or `n_ctx`",
            ) from exc
        self.n_ctx_seq = lc.llama_n_ctx(self.ctx.ctx) // n_seq
        self.batch = lc.llama_batch_init(n_batch, 0, 1)
        self.n_past = [0] * n_seq

    def decode(self, feeds: dict[int, list[int]], want: set[int] | None = None) -> tuple[list[int], object]:
        """Append ``feeds[seq]`` to each sequence in one decode. Returns the sequences that asked
        for logits (``want``; default all fed) and their next-token logits as one float32 numpy
        view [len(seqs), vocab] over llama.cpp's buffer, valid until the next decode: no copies."""
        lc, b = self.llama_cpp, self.batch
        total = sum(len(ids) for ids in feeds.values())
        if not 0 < total <= self.max_batch_tokens:
            raise InputError(f"a batch of {total} tokens; this context takes 1 to {self.max_batch_tokens}")
        token, pos, n_seq_id, logits, seq_id = b.token, b.pos, b.n_seq_id, b.logits, b.seq_id
        i, seqs = 0, []
        for seq, ids in feeds.items():
            start = self.n_past[seq]
            if start + len(ids) > self.n_ctx_seq:
                raise InputError(f"sequence {seq} would hold {start + len(ids)} tokens; a slot holds {self.n_ctx_seq}")
            for k, t in enumerate(ids):
                token[i], pos[i], n_seq_id[i], logits[i] = t, start + k, 1, False
                seq_id[i][0] = seq
                i += 1
            if want is None or seq in want:  # only a prompt's last chunk needs its logits row
                logits[i - 1] = True
                seqs.append(seq)
        b.n_tokens = i
        code = lc.llama_decode(self.ctx.ctx, b)
        if code != 0:
            raise EngineError(f"llama_decode returned {code} for a batch of {i} tokens")
        for seq, ids in feeds.items():
            self.n_past[seq] += len(ids)
        if not seqs:
            return seqs, self.np.empty((0, self.n_vocab), dtype=self.np.float32)
        # Output rows come in batch order (llama_get_logits reorders them), one per flagged token.
        pointer = ctypes.cast(lc.llama_get_logits(self.ctx.ctx), ctypes.POINTER(ctypes.c_float))
        return seqs, self.np.ctypeslib.as_array(pointer, shape=(len(seqs), self.n_vocab))

    def step(self, feeds: dict[int, list[int]]) -> dict:
        """Append ``feeds[seq]`` to each sequence in one decode; the next-token logits (float32
        numpy [vocab], a copy) of each fed sequence's last token."""
        seqs, rows = self.decode(feeds)
        return {seq: rows[k].copy() for k, seq in enumerate(seqs)}

    def free(self, seq: int) -> None:
        """Forget sequence ``seq`` (its KV cells are free for the next request)."""
        self.llama_cpp.llama_memory_seq_rm(self.ctx.memory, seq, -1, -1)
        self.n_past[seq] = 0

    def close(self) -> None:
        if getattr(self, "batch", None) is not None:
            self.llama_cpp.llama_batch_free(self.batch)
            self.batch = None
        if getattr(self, "ctx", None) is not None:
            self.ctx.close()
            self.ctx = None
