"""The llama.cpp engine (llama-cpp-python): a .gguf file, or an artifact folder holding one.

It drives the context with llama-cpp-python's own batch/decode objects (as ``Llama.eval`` does) so
that the running context and the teacher-forced logits of every position share one code path;
``Llama.eval`` keeps logits of all positions only with ``logits_all``, which costs n_ctx x vocab
floats for the whole session."""

import ctypes
import os
import weakref
from pathlib import Path

from quantkit.core.errors import EngineError, InputError, missing_extra
from quantkit.engines.base import EngineOptions
from quantkit.engines.generate import COMMON_SPECIAL, stream_tokens
from quantkit.engines.llamacpp_build import ensure_runs_here


def find_gguf(path: Path) -> Path:
    """The .gguf file of ``path``: the file itself, the manifest's choice, or the folder's only one."""
    if path.is_file():
        return path
    from quantkit.core.manifest import read_manifest

    manifest = read_manifest(path) or {}
    named = manifest.get("gguf_file") or manifest.get("settings", {}).get("gguf_file")
    if named and (path / named).is_file():
        return path / named
    files = sorted(path.glob("*.gguf"))
    if len(files) == 1:
        return files[0]
    if not files:
        raise InputError(f"{path} holds no .gguf file")
    raise InputError(f"{path} holds {len(files)} .gguf files", hint="pass the one to use: " + ", ".join(f.name for f in files))


def offload_layers(device: str, n_gpu_layers: int | None, gpu_build: bool) -> tuple[int, list[str]]:
    """Layers to put on the GPU (-1: all) and warnings. ``cuda`` means all layers unless
    ``n_gpu_layers`` names a number (0 or None there: all, a GPU device with no layer on it is no
    GPU run); ``auto`` offloads what ``n_gpu_layers`` says when the build can; ``cpu`` none."""
    if device == "cpu":
        return 0, []
    if device == "cuda":
        return (n_gpu_layers or -1), []
    if n_gpu_layers and not gpu_build:
        return 0, [
            f"--n-gpu-layers {n_gpu_layers} asked for, but this llama-cpp-python build has no GPU support: it ran on the CPU"
        ]
    return (n_gpu_layers or 0), []


class LlamaCppEngine:
    name = "llama.cpp"

    def __init__(self, path: Path, options: EngineOptions):
        try:
            import llama_cpp
            import numpy as np
        except ImportError:
            raise missing_extra("llama-cpp-python", "gguf") from None
        self.llama_cpp, self.np = llama_cpp, np
        self.path = Path(path)
        self.file = find_gguf(self.path)
        self.options = options
        if options.device == "cuda" and not llama_cpp.llama_supports_gpu_offload():
            raise InputError(
                "`device='cuda'` asked for, but this llama-cpp-python build has no GPU support",
                hint="reinstall it with CMAKE_ARGS=-DGGML_CUDA=on, or use `device='cpu'`",
            )
        gpu_layers, self.warnings = offload_layers(options.device, options.n_gpu_layers, llama_cpp.llama_supports_gpu_offload())
        self.device = "cuda" if gpu_layers else "cpu"
        self.gpu_layers = gpu_layers  # -1: all
        self.threads = options.threads or max(1, (os.cpu_count() or 2) // 2)
        # A build that faults on this CPU must be reported, not dump core in this process.
        ensure_runs_here(self.file, threads=1)
        try:
            self.llm = llama_cpp.Llama(
                model_path=str(self.file),
                n_ctx=options.n_ctx,
                n_batch=512,
                n_threads=self.threads,
                n_threads_batch=self.threads,
                n_gpu_layers=gpu_layers,
                logits_all=False,
                flash_attn=options.flash_attn,  # the batch context (serve --parallel) inherits it
                verbose=False,
            )
        except (ValueError, RuntimeError) as exc:
            raise EngineError(f"llama.cpp could not load {self.file}: {exc}") from exc
        # Free the model before interpreter shutdown: Llama.__del__ at exit fails on torn-down globals.
        self._free = weakref.finalize(self, self.llm.close)
        self.n_vocab = self.llm.n_vocab()
        self.n_params = self.llm._model.n_params() or None
        self.n_layers = int(llama_cpp.llama_model_n_layer(self.llm._model.model))
        if 0 < gpu_layers < self.n_layers:
            self.warnings.append(
                f"only {gpu_layers} of {self.n_layers} layers run on the GPU, the rest on the CPU "
                "(--n-gpu-layers -1 puts all there)"
            )
        self.weights_bytes = self.file.stat().st_size
        vocab = self.llm._model.vocab
        self.eos_ids = {i for i in range(self.n_vocab) if llama_cpp.llama_vocab_is_eog(vocab, i)}
        control = {
            i for i in range(self.n_vocab) if llama_cpp.llama_vocab_get_attr(vocab, i) & llama_cpp.LLAMA_TOKEN_ATTR_CONTROL
        }
        self.special_tokens = {self.llm._model.token_get_text(i) for i in control | self.eos_ids} | COMMON_SPECIAL
        self.special_tokens.discard("")
        self._n_past = 0
        self._template = self._chat_template()
        self._pieces: dict[int, bytes] = {}  # token id -> its bytes (filled as tokens are generated)
        self._piece_buffer = ctypes.create_string_buffer(64)

    def _chat_template(self):
        text = self.llm.metadata.get("tokenizer.chat_template")
        side = (self.path if self.path.is_dir() else self.path.parent) / "chat_template.jinja"
        if not text and side.is_file():
            text = side.read_text()
        if not text:
            return None
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        piece = self.llm._model.token_get_text
        return Jinja2ChatFormatter(text, eos_token=piece(self.llm.token_eos()), bos_token=piece(self.llm.token_bos()))

    def tokenize(self, text: str, add_special: bool = False) -> list[int]:
        # special=True: control tokens written in the text (a rendered chat template) stay single ids.
        return self.llm.tokenize(text.encode("utf-8"), add_bos=add_special, special=True)

    def detokenize(self, ids: list[int]) -> str:
        return self.llm.detokenize(list(ids), special=True).decode("utf-8", errors="replace")

    def token_bytes(self, token: int) -> bytes:
        """The bytes of one token's text (control tokens spelled out, as ``detokenize`` does):
        cached, so the serve loop pays one dict lookup per generated token."""
        piece = self._pieces.get(token)
        if piece is None:
            lc, buffer = self.llama_cpp, self._piece_buffer
            n = lc.llama_token_to_piece(self.llm._model.vocab, token, buffer, len(buffer), 0, True)
            if n < 0:  # longer than the buffer: -n is the size it needs
                buffer = ctypes.create_string_buffer(-n)
                n = lc.llama_token_to_piece(self.llm._model.vocab, token, buffer, len(buffer), 0, True)
            piece = self._pieces[token] = buffer.raw[:n]
        return piece

    def chat_prompt(self, messages: list[dict]) -> list[int]:
        if self._template is None:
            raise InputError(f"{self.file.name} has no chat template", hint="the GGUF's tokenizer.chat_template is empty")
        from quantkit.engines.chat_tokens import chat_ids

        def as_text(text):  # message text: control-token spellings stay plain characters
            return self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=False)

        return chat_ids(
            self._template(messages=messages).prompt, messages, lambda text: self.tokenize(text, add_special=False), as_text
        )

    def batch_decoder(self, n_seq: int, n_ctx_seq: int):
        """``n_seq`` sequences decoded together in a context of their own (the serve batch)."""
        from quantkit.engines.llamacpp_batch import LlamaCppBatch

        return LlamaCppBatch(self, n_seq, n_ctx_seq)

    def stream(self, prompt_ids, max_tokens, temperature=0.0, top_p=1.0, seed=None, ignore_eos=False):
        return stream_tokens(self, prompt_ids, max_tokens, temperature, top_p, seed, ignore_eos)

    def reset(self) -> None:
        self.llm._ctx.kv_cache_seq_rm(-1, 0, -1)
        self._n_past = 0

    def _decode(self, ids: list[int], all_logits: bool, first: int = 0):
        """Run ``ids`` after the current context in n_batch chunks; return their logits rows
        (``all_logits``: of every position from ``first`` on, as llama-perplexity asks for)."""
        np = self.np
        n_ctx = self.llm._n_ctx  # fixed when the context was made (Llama keeps it)
        if self._n_past + len(ids) > n_ctx:
            raise InputError(
                f"{self._n_past + len(ids)} tokens exceed the context of {n_ctx}", hint="use a shorter prompt or a larger n_ctx"
            )
        rows = []
        step = self.llm.n_batch
        for start in range(0, len(ids), step):
            chunk = ids[start : start + step]
            self.llm._batch.set_batch(batch=chunk, n_past=self._n_past, logits_all=all_logits)
            for j in range(min(max(first - start, 0), len(chunk))):
                self.llm._batch.batch.logits[j] = False  # an unscored position: no output row
            try:
                self.llm._ctx.decode(self.llm._batch)
            except RuntimeError as exc:
                raise EngineError(f"llama.cpp decode failed: {exc}") from exc
            self._n_past += len(chunk)
            n_out = len(chunk) - min(max(first - start, 0), len(chunk)) if all_logits else 1
            if n_out == 0:
                continue
            pointer = self.llm._ctx.get_logits()
            rows.append(
                np.ctypeslib.as_array(ctypes.cast(pointer, ctypes.POINTER(ctypes.c_float)), shape=(n_out, self.n_vocab)).copy()
            )
        return rows

    def forward(self, ids: list[int]):
        if len(ids) != 1:
            return self._decode(list(ids), all_logits=False)[-1][-1]
        # One token (every decode step): fill the batch's first slot and read the one logits row
        # directly; the general path's per-call conversions cost about as much as the copy itself.
        llama_cpp, batch = self.llama_cpp, self.llm._batch.batch
        if self._n_past + 1 > self.llm._n_ctx:
            return self._decode(list(ids), all_logits=False)[-1][-1]  # raises the context error
        batch.n_tokens = 1
        batch.token[0], batch.pos[0], batch.n_seq_id[0], batch.logits[0] = ids[0], self._n_past, 1, True
        batch.seq_id[0][0] = 0
        if llama_cpp.llama_decode(self.llm._ctx.ctx, batch) != 0:
            raise EngineError("llama.cpp decode failed on one token")
        self._n_past += 1
        row = llama_cpp.llama_get_logits(self.llm._ctx.ctx)
        return self.np.ctypeslib.as_array(row, shape=(self.n_vocab,)).copy()

    def logits(self, ids: list[int], first: int = 0):
        self.reset()
        try:
            return self.np.concatenate(self._decode(list(ids), all_logits=True, first=first))
        finally:
            self.reset()

    def synchronize(self) -> None:
        pass  # llama_decode returns when the logits are ready

    def close(self) -> None:
        if getattr(self, "_free", None) is not None:
            self._free()
