"""Fidelity checks for GGUF exports: the field's most common silent failures, caught at export.

- (before the conversion: gguf/preflight.py, the converter knows the architecture and tokenizer);
- token parity: llama.cpp tokenizes a fixed probe set exactly as the HF tokenizer does;
- metadata: the chat template travels in the file and the template's end-of-turn token stops
  generation (is end-of-generation for llama.cpp);
- smoke chat: llama.cpp's own chat handling answers and stops by itself; a model without a chat
  template (a base model) gets a completion smoke instead: it continues a prompt.
"""

import ctypes
import json
import logging
import os
import sys
from pathlib import Path

from quantkit.core import events
from quantkit.core.child import run_json_child
from quantkit.core.crash import crash_error, crashed
from quantkit.core.errors import QuantizeError
from quantkit.quantization.gguf.tools import key_line

LOG = events.logger(__name__)
CHILD_PREFIX = "quantkit: "  # how the checking child writes its reports on stderr

PROBES = (
    "Hello world",
    " leading space",
    "   three leading spaces and trailing  ",
    "\n\nnewlines\tand\ttabs\n",
    "3.14159 12345678 1,000,000 2024-11-22 0x1F",
    "def square(x):\n    return x ** 2  # comment\n",
    'for (int i = 0; i < n; ++i) { sum += a[i]; }  // C\n{"key": [1, 2, null]}',
    "我想在苹果工作。日本語のテキスト、한국어 문장.",
    "🚀 rocket, 🦙🦙 llamas, 😶\u200d🌫️ joined, ✅ done",
    "Ünïcödé naïve café — “quotes” … ellipsis",
)
CHAT_PROBE = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "What is 2+2?"},
    {"role": "assistant", "content": "4."},
    {"role": "user", "content": "And 3+3?"},
]
SMOKE_PROMPT = "What is the capital of France?"


def default_threads() -> int:
    """Half the cores, at most 4: on a small busy machine more threads make llama.cpp erratic."""
    return max(1, min(4, (os.cpu_count() or 2) // 2))


def hf_tokenizer(model_dir: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir)


class GgufVocab:
    """llama.cpp's tokenizer of a GGUF file, loaded vocab-only through the C API (llama_cpp.Llama
    would also build a context, which a vocab-only model cannot have)."""

    def __init__(self, gguf_path: Path):
        import llama_cpp

        self.lib = llama_cpp
        params = llama_cpp.llama_model_default_params()
        params.vocab_only = True
        self.model = llama_cpp.llama_model_load_from_file(str(gguf_path).encode(), params)
        if not self.model:
            raise QuantizeError(f"llama.cpp cannot load {gguf_path.name}", hint="the conversion wrote a broken file")
        self.vocab = llama_cpp.llama_model_get_vocab(self.model)

    def __enter__(self) -> "GgufVocab":
        return self

    def __exit__(self, *exc) -> None:
        self.lib.llama_model_free(self.model)

    def tokenize(self, text: str, add_special: bool = False) -> list[int]:
        data = text.encode()
        size = len(data) + 8
        buf = (self.lib.llama_token * size)()
        n = self.lib.llama_tokenize(self.vocab, data, len(data), buf, size, add_special, True)
        if n < 0:  # buffer too small: llama.cpp says how many it needs
            size = -n
            buf = (self.lib.llama_token * size)()
            n = self.lib.llama_tokenize(self.vocab, data, len(data), buf, size, add_special, True)
        return list(buf[:n])

    def piece(self, token: int) -> str:
        buf = ctypes.create_string_buffer(256)
        n = self.lib.llama_token_to_piece(self.vocab, token, buf, len(buf), 0, True)
        return buf.raw[: max(n, 0)].decode("utf-8", "replace")

    def is_eog(self, token: int) -> bool:
        return bool(self.lib.llama_vocab_is_eog(self.vocab, token))

    def end_of_generation(self) -> list[str]:
        return [self.piece(t) for t in range(self.lib.llama_vocab_n_tokens(self.vocab)) if self.is_eog(t)]


def token_parity(gguf_path: Path, tokenizer) -> dict:
    """Tokenize the probes with both tokenizers; any difference fails, naming the first string."""
    probes = list(PROBES)
    if tokenizer.chat_template:
        probes.append(tokenizer.apply_chat_template(CHAT_PROBE, tokenize=False, add_generation_prompt=True))
    with GgufVocab(gguf_path) as vocab:
        for text in probes:
            ours, theirs = vocab.tokenize(text), tokenizer.encode(text, add_special_tokens=False)
            if ours != theirs:
                raise parity_error(gguf_path, text, theirs, ours)
        # With special tokens: does llama.cpp add BOS (and EOS) exactly when the HF tokenizer does?
        text = PROBES[0]
        ours, theirs = vocab.tokenize(text, add_special=True), tokenizer.encode(text)
        if ours != theirs:
            raise parity_error(gguf_path, text + " (with BOS/EOS)", theirs, ours)
    return {"probes": len(probes) + 1, "identical": True}


def parity_error(gguf_path: Path, text: str, hf_ids: list[int], ours: list[int]) -> QuantizeError:
    at = next((i for i, (a, b) in enumerate(zip(hf_ids, ours)) if a != b), min(len(hf_ids), len(ours)))
    return QuantizeError(
        f"token parity failed for {gguf_path.name} on {text[:60]!r}: HF {hf_ids[at : at + 4]} vs llama.cpp "
        f"{ours[at : at + 4]} at token {at}",
        hint="llama.cpp would not see the prompts the model was trained on; the converter or tokenizer needs fixing",
    )


def read_gguf(gguf_path: Path) -> tuple[dict, dict[str, str], int]:
    """Tokenizer/template fields, tensor types and parameter count of a GGUF file, read once
    with the PyPI gguf package (parsing a file costs seconds: its vocabulary is a long array)."""
    from gguf import GGUFReader

    reader = GGUFReader(gguf_path)
    keys = (
        "general.architecture",
        "general.file_type",
        "tokenizer.ggml.model",
        "tokenizer.ggml.pre",
        "tokenizer.chat_template",
        "tokenizer.ggml.bos_token_id",
        "tokenizer.ggml.eos_token_id",
        "tokenizer.ggml.eot_token_id",
        "tokenizer.ggml.add_bos_token",
    )
    meta = {key: reader.fields[key].contents() for key in keys if key in reader.fields}
    tokens = reader.fields.get("tokenizer.ggml.tokens")
    for key in ("bos", "eos", "eot"):
        token_id = meta.get(f"tokenizer.ggml.{key}_token_id")
        if tokens is not None and token_id is not None and token_id < len(tokens.data):
            meta[f"{key}_token"] = bytes(tokens.parts[tokens.data[token_id]]).decode("utf-8", "replace")
    tensors = {t.name: t.tensor_type.name for t in reader.tensors}
    return meta, tensors, sum(int(t.n_elements) for t in reader.tensors)


def end_of_turn(template: str, bos: str = "", eos: str = "") -> str | None:
    """The text a chat template puts right after an assistant message (e.g. ``<|im_end|>``)."""
    from quantkit.quantization.gguf.ollama import ASS, render_template

    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": ASS}]
    try:
        text = render_template(template, messages, False, bos, eos)
    except Exception:
        return None
    tail = text.split(ASS, 1)[1] if ASS in text else ""
    return tail.strip() or None


def check_metadata(gguf_path: Path, tokenizer, meta: dict) -> dict:
    """The GGUF carries the HF chat template, and the template's end-of-turn token stops llama.cpp."""
    template = tokenizer.chat_template
    if template and meta.get("tokenizer.chat_template") != template:
        raise QuantizeError(
            f"{gguf_path.name} does not carry the model's chat template",
            hint="check tokenizer_config.json / chat_template.jinja in the model folder",
        )
    if meta.get("tokenizer.ggml.eos_token_id") is None:
        raise QuantizeError(f"{gguf_path.name} has no EOS token id", hint="generation would never stop")
    result = {
        "chat_template": bool(template),
        "eos_token_id": meta.get("tokenizer.ggml.eos_token_id"),
        "eos_token": meta.get("eos_token"),
        "eot_token_id": meta.get("tokenizer.ggml.eot_token_id"),
        "eot_token": meta.get("eot_token"),
        "stop_tokens": [],
    }
    turn_end = end_of_turn(template, tokenizer.bos_token or "", tokenizer.eos_token or "") if template else None
    with GgufVocab(gguf_path) as vocab:
        if turn_end:
            ids = vocab.tokenize(turn_end)
            if len(ids) == 1 and not vocab.is_eog(ids[0]):
                raise QuantizeError(
                    f"{gguf_path.name}: the chat template ends turns with {turn_end!r} "
                    f"(token {ids[0]}), which llama.cpp does not treat as end of generation",
                    hint="set eos_token_id in generation_config.json / tokenizer_config.json and convert again",
                )
            result["end_of_turn"] = turn_end
        result["stop_tokens"] = vocab.end_of_generation()
    return result


def smoke_chat(gguf_path: Path, n_threads: int | None = None, max_tokens: int = 48) -> dict:
    """One question through llama.cpp's own chat handling (the embedded template), greedy."""
    import llama_cpp

    llm = llama_cpp.Llama(model_path=str(gguf_path), n_ctx=512, n_threads=n_threads or default_threads(), seed=0, verbose=False)
    try:
        out = llm.create_chat_completion(
            messages=[{"role": "user", "content": SMOKE_PROMPT}], max_tokens=max_tokens, temperature=0.0
        )
    except Exception as exc:  # llama.cpp's or the Jinja formatter's failure, kept in one line
        raise QuantizeError(f"smoke chat on {gguf_path.name} failed: {exc}") from None
    finally:
        llm.close()
    choice = out["choices"][0]
    reply = choice["message"]["content"] or ""
    if not reply.strip():
        raise QuantizeError(
            f"smoke chat on {gguf_path.name} produced an empty reply", hint="the chat template or the stop tokens are wrong"
        )
    return {
        "mode": "chat",
        "prompt": SMOKE_PROMPT,
        "reply": reply,
        "finish_reason": choice["finish_reason"],
        "stopped_by_itself": choice["finish_reason"] == "stop",
        "tokens": out["usage"]["completion_tokens"],
    }


def smoke_completion(gguf_path: Path, n_threads: int | None = None, max_tokens: int = 32) -> dict:
    """A model without a chat template (a base model): the smoke's first prompt continued by
    llama.cpp's plain completion, greedy. Stopping at EOS or running to ``max_tokens`` are both
    fine for a base model; producing nothing at all is not (a wrong EOS, or broken weights)."""
    import llama_cpp

    from quantkit.core.smoke_text import PROMPTS, TITLES

    prompt = PROMPTS[0]
    llm = llama_cpp.Llama(model_path=str(gguf_path), n_ctx=512, n_threads=n_threads or default_threads(), seed=0, verbose=False)
    try:
        out = llm.create_completion(prompt, max_tokens=max_tokens, temperature=0.0)
    except Exception as exc:
        raise QuantizeError(f"completion smoke on {gguf_path.name} failed: {exc}") from None
    finally:
        llm.close()
    choice = out["choices"][0]
    text = choice["text"] or ""
    if not text.strip():
        raise QuantizeError(
            f"completion smoke on {gguf_path.name} produced no text",
            hint="llama.cpp stops at once: the EOS token or the weights are wrong",
        )
    return {
        "mode": "completion",
        "title": TITLES["completion"],
        "prompt": prompt,
        "reply": text,
        "finish_reason": choice["finish_reason"],
        "tokens": out["usage"]["completion_tokens"],
    }


def check_files(model_dir: Path, files: dict[str, Path], smoke: bool = True, n_threads: int | None = None) -> dict:
    """All checks on each GGUF file, in this process (``verify`` runs it isolated); also returns
    each file's tensor types and parameter count, for the manifest. A file without a chat template
    (a base model) gets a completion smoke (``smoke_completion``) instead of the smoke chat."""
    tokenizer = hf_tokenizer(model_dir)
    results = {}
    for gguf_type, path in files.items():
        meta, tensors, n_params = read_gguf(path)
        chat = bool(meta.get("tokenizer.chat_template"))
        what = ("smoke chat" if chat else "completion smoke (no chat template)") if smoke else ""
        LOG.info(f"checking {path.name}: token parity, metadata" + (f", {what}" if what else ""))
        results[gguf_type] = {
            "tensors": tensors,
            "n_params": n_params,
            "token_parity": token_parity(path, tokenizer),
            "metadata": check_metadata(path, tokenizer, meta),
        }
        if smoke and chat:
            results[gguf_type]["smoke_chat"] = smoke_chat(path, n_threads)
        elif smoke:
            results[gguf_type]["smoke_completion"] = smoke_completion(path, n_threads)
    return results


def verify(model_dir: Path, files: dict[str, Path], smoke: bool = True, n_threads: int | None = None) -> dict:
    """``check_files`` in a fresh interpreter: a llama.cpp abort on a bad file (it can throw past
    the C API) becomes a one-line error instead of killing quantkit."""
    spec = {"model_dir": str(model_dir), "files": {k: str(v) for k, v in files.items()}, "smoke": smoke, "n_threads": n_threads}
    proc, answer = run_json_child(["-m", __name__, json.dumps(spec)])
    for line in proc.stderr.splitlines():  # the child's reports (main() writes them as "quantkit: ...")
        if line.startswith(CHILD_PREFIX):
            LOG.info(line.removeprefix(CHILD_PREFIX))
    if proc.returncode == 0 and "results" in answer:
        return answer["results"]
    if "error" in answer:
        raise QuantizeError(answer["error"], hint=answer.get("hint"))
    crash = [line.strip() for line in proc.stderr.splitlines() if "terminate called" in line or "what():" in line]
    reason = " ".join(crash) or key_line(proc.stderr)
    if crashed(proc.returncode) and not crash:  # a fault, not llama.cpp refusing the file (which aborts with a message)
        raise crash_error("llama.cpp", "checking the GGUF file(s)", proc.returncode, reason)
    raise QuantizeError(
        f"llama.cpp failed while checking the GGUF file(s) (exit {proc.returncode}): {reason}",
        hint="the converted file is unusable; rerun with QUANTKIT_DEBUG=1 for the full output",
    )


def quiet_llama_logs() -> None:
    """Keep llama.cpp's warnings and errors on stderr, drop its info chatter."""
    import llama_cpp

    @llama_cpp.llama_log_callback
    def warn_only(level, text, user_data):
        if level in (2, 3):
            sys.stderr.write(text.decode("utf-8", "replace"))

    quiet_llama_logs.callback = warn_only  # must outlive this call
    llama_cpp.llama_log_set(warn_only, ctypes.c_void_p(0))


def main(argv: list[str]) -> int:
    from quantkit.core.errors import QuantkitError

    spec = json.loads(argv[0])
    relay = logging.StreamHandler(sys.stderr)  # the parent's verify() reads these lines back
    relay.setFormatter(logging.Formatter(CHILD_PREFIX + "%(message)s"))
    LOG.addHandler(relay)
    LOG.setLevel(logging.INFO)
    if not os.environ.get("QUANTKIT_DEBUG"):
        quiet_llama_logs()
    try:
        results = check_files(
            Path(spec["model_dir"]), {k: Path(v) for k, v in spec["files"].items()}, spec["smoke"], spec.get("n_threads")
        )
    except QuantkitError as exc:
        print(json.dumps({"error": exc.message, "hint": exc.hint}))
        return 1
    print(json.dumps({"results": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
