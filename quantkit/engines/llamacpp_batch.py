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
            raise EngineError(f"llama.cpp could not make a context for {n_seq} sequences x {n_ctx_seq} tokens: {exc}",
                              hint="lower --parallel or --n-ctx") from exc
        self.n_ctx_seq = lc.llama_n_ctx(self.ctx.ctx) // n_seq
        self.batch = lc.llama_batch_init(n_batch, 0, 1)
        self.n_past = [0] * n_seq

    def step(self, feeds: dict[int, list[int]]) -> dict:
        """Append ``feeds[seq]`` to each sequence in one decode; the next-token logits (float32
        numpy [vocab]) of each fed sequence's last token."""
        lc, b = self.llama_cpp, self.batch
        total = sum(len(ids) for ids in feeds.values())
        if not 0 < total <= self.max_batch_tokens:
            raise InputError(f"a batch of {total} tokens; this context takes 1 to {self.max_batch_tokens}")
        i, last = 0, {}
        for seq, ids in feeds.items():
            if self.n_past[seq] + len(ids) > self.n_ctx_seq:
                raise InputError(f"sequence {seq} would hold {self.n_past[seq] + len(ids)} tokens; a slot holds {self.n_ctx_seq}")
            pos = self.n_past[seq]
            for k, token in enumerate(ids):
                b.token[i], b.pos[i], b.n_seq_id[i], b.logits[i] = token, pos + k, 1, k == len(ids) - 1
                b.seq_id[i][0] = seq
                i += 1
            last[seq] = i - 1
        b.n_tokens = i
        code = lc.llama_decode(self.ctx.ctx, b)
        if code != 0:
            raise EngineError(f"llama_decode returned {code} for a batch of {i} tokens")
        out = {}
        for seq, ids in feeds.items():
            self.n_past[seq] += len(ids)
            pointer = lc.llama_get_logits_ith(self.ctx.ctx, last[seq])
            out[seq] = self.np.ctypeslib.as_array(ctypes.cast(pointer, ctypes.POINTER(ctypes.c_float)),
                                                  shape=(self.n_vocab,)).copy()
        return out

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
