"""The protocol every inference engine implements. Bench, smoke chat, quality, the interactive
chat and the server all run on it, so each works for every artifact kind."""

from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Protocol

from quantkit.core.settings import option


@dataclass
class EngineOptions:
    """An engine's settings, declared once (quantkit/core/settings.py): chat's and serve's flags
    (quantkit/cli/chat_cmd.py), bench's device, threads and GPU layers (``engine_option``) and the
    API's parameters come from these fields. A new engine's setting is one more field here."""

    device: str = option("auto", "Where to run (auto: a GPU when there is one).", choices=("auto", "cpu", "cuda"))
    threads: int | None = option(None, "Compute threads (llama.cpp n_threads, torch threads).", minimum=1)
    n_gpu_layers: int = option(0, "llama.cpp layers to offload (-1: all; with device cuda, 0 means all).")
    n_ctx: int = option(4096, "Context length in tokens.", minimum=1)
    # Off by default so measurements match llama.cpp's tools run with -fa off (llama-perplexity,
    # llama-bench); chat and serve turn it on (~20% faster decode on CPU).
    flash_attn: bool = option(False, "llama.cpp: flash attention (as llama-server and llama-cli use it).")
    trust_remote_code: bool = option(False, "Allow the model's own Python code to run.")
    allow_pickle: bool = option(
        False, "transformers: load .bin (pickle) weights when no safetensors exist.", cli=False, recipe=False
    )
    dtype: str | None = option(
        None, "transformers: torch dtype name (None: float32 on CPU, the checkpoint's on CUDA).", cli=False, recipe=False
    )


def engine_option(name: str, **changes):
    """A field declared as EngineOptions' ``name`` (its help, bounds, choices), for another settings
    dataclass that passes it on to the engine (bench's device, threads, GPU layers); ``changes``
    replace its default or metadata."""
    declared = {f.name: f for f in fields(EngineOptions)}[name]
    default = changes.pop("default", declared.default)
    return field(default=default, metadata={**declared.metadata, **changes})


@dataclass
class Token:
    """One generated token: its id and the text it adds (may be '' mid multi-byte character)."""

    id: int
    text: str


class Engine(Protocol):
    name: str  # transformers | llama.cpp
    path: Path
    eos_ids: set[int]  # ids that end a turn (eos, eot, <|im_end|>...)
    special_tokens: set[str]  # texts of control tokens (for template-leak checks)
    device: str  # where it runs: cpu | cuda
    threads: int  # compute threads in use
    n_params: int | None  # parameter count (None when unknown)
    n_vocab: int  # token ids are 0 .. n_vocab - 1 (a prompt given as ids is checked against it)
    weights_bytes: int  # bytes of weight files loaded (read per decoded token, roughly)
    # Optional, for serve's continuous batching: batch_decoder(n_seq, n_ctx_seq) returns an object with
    # step({seq: ids}) -> {seq: next-token logits}, free(seq) and close() (engines/hf_batch.py, llamacpp_batch.py).

    def tokenize(self, text: str, add_special: bool = False) -> list[int]: ...

    def detokenize(self, ids: list[int]) -> str: ...

    def chat_prompt(self, messages: list[dict]) -> list[int]:
        """Token ids of ``messages`` through the artifact's own chat template, with the
        generation prompt appended."""

    def stream(
        self,
        prompt_ids: list[int],
        max_tokens: int,
        temperature: float = 0.0,
        top_p: float = 1.0,
        seed: int | None = None,
        ignore_eos: bool = False,
    ) -> Iterator[Token]:
        """Generate after ``prompt_ids``; stops at an eos id (not yielded) or ``max_tokens``
        (``ignore_eos``: only at ``max_tokens``, as benchmarks of servers ask)."""

    def logits(self, ids: list[int], first: int = 0):
        """float32 numpy array [len(ids) - first, vocab]: next-token logits at every position
        from ``first`` on (teacher forced, one sequence; the earlier ones only as context)."""

    def reset(self) -> None:
        """Forget the running context (KV cache) that ``forward`` appends to."""

    def forward(self, ids: list[int]):
        """Append ``ids`` to the running context and return the float32 numpy logits [vocab] of
        the last position; returns only when the device is done (timing-safe)."""

    def close(self) -> None: ...
