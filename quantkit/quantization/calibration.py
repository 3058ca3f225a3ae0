"""Calibration text for methods that need activations (AWQ): offline by default.

Sources: the shipped set (``quantkit/data/calibration.txt``, written for quantkit, no licence
strings attached) or ``--calib FILE`` - ``.txt`` (paragraphs separated by blank lines) or
``.jsonl`` (one object a line with ``"text"``, or ``"messages"`` in the OpenAI chat shape).
Samples are paragraphs packed up to the sequence length; for a model with a chat template half of
them are rendered through that template, so the activations of chat use are seen too.
The sha256 covers the exact sample strings used, so two runs with the same hash saw the same data.
"""

import hashlib
import json
import random
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from quantkit.core.errors import InputError

DEFAULT_NAME = "quantkit:calibration.txt"
SEED = 0  # fixed: the same inputs always give the same samples (and hash)
CHAT_PROMPTS = (
    "Continue this text.",
    "Write a passage that starts like this.",
    "Please go on from here.",
    "Tell me more, in the same style.",
)


@dataclass
class CalibrationSet:
    samples: list[str]  # what the model sees (tokenized and cut to seq_len by the method)
    source: str  # the file, or DEFAULT_NAME
    seq_len: int
    chat_samples: int = 0
    source_sha256: str = ""
    sha256: str = field(init=False)

    def __post_init__(self):
        self.sha256 = hashlib.sha256("\x00".join(self.samples).encode()).hexdigest()

    def record(self) -> dict:
        """The manifest's ``calibration`` entry."""
        return {
            "source": self.source,
            "source_sha256": self.source_sha256,
            "sha256": self.sha256,
            "samples": len(self.samples),
            "seq_len": self.seq_len,
            "chat_samples": self.chat_samples,
        }


def default_text() -> str:
    return resources.files("quantkit").joinpath("data/calibration.txt").read_text(encoding="utf-8")


def read_records(path: Path | None) -> tuple[list[str | list[dict]], str, str]:
    """(records, source name, sha256 of the source bytes); a record is a text or a chat."""
    if path is None:
        raw = default_text().encode()
        return split_paragraphs(raw.decode()), DEFAULT_NAME, hashlib.sha256(raw).hexdigest()
    path = Path(path)
    if not path.is_file():
        raise InputError(f"calibration file {path} does not exist", hint="pass a .txt or .jsonl file as `calib`")
    if path.suffix not in (".txt", ".jsonl"):
        raise InputError(
            f"calibration file {path} is neither .txt nor .jsonl",
            hint="use paragraphs in a .txt or one JSON object a line in a .jsonl",
        )
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"calibration file {path} is not UTF-8 text: {exc}") from None
    records = split_paragraphs(text) if path.suffix == ".txt" else parse_jsonl(text, path)
    if not records:
        raise InputError(f"calibration file {path} holds no text", hint="it needs at least one non-empty paragraph")
    return records, str(path), hashlib.sha256(raw).hexdigest()


def split_paragraphs(text: str) -> list[str]:
    return [p.strip() for p in text.replace("\r\n", "\n").split("\n\n") if p.strip()]


def parse_jsonl(text: str, path: Path) -> list[str | list[dict]]:
    records = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"{path}:{number} is not valid JSON: {exc.msg}", hint='one object a line: {"text": "..."}') from None
        if isinstance(obj, str):
            obj = {"text": obj}
        if isinstance(obj, dict) and isinstance(obj.get("text"), str):
            if obj["text"].strip():
                records.append(obj["text"].strip())
        elif isinstance(obj, dict) and valid_messages(obj.get("messages")):
            records.append(obj["messages"])
        else:
            raise InputError(
                f'{path}:{number} has neither a "text" string nor a "messages" list',
                hint='e.g. {"text": "..."} or {"messages": [{"role": "user", "content": "..."}]}',
            )
    return records


def valid_messages(messages) -> bool:
    return (
        isinstance(messages, list)
        and bool(messages)
        and all(isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str) for m in messages)
    )


def build(tokenizer, path: Path | None = None, samples: int = 64, seq_len: int = 256, chat: bool = True) -> CalibrationSet:
    """``samples`` calibration strings of about ``seq_len`` tokens each (fewer when the data runs out).

    Text records are packed (joined by blank lines) until a sample reaches ``seq_len`` tokens, so
    short paragraphs do not waste the sequence length; chat records are rendered one per sample."""
    if samples < 1 or seq_len < 8:
        raise InputError(
            "calibration needs at least 1 sample of at least 8 tokens", hint="raise `calib_samples` / `calib_seq_len`"
        )
    records, source, source_sha = read_records(path)
    texts = [r for r in records if isinstance(r, str)]
    chats = [r for r in records if not isinstance(r, str)]
    has_template = bool(getattr(tokenizer, "chat_template", None))
    if chats and not has_template:
        raise InputError(
            f"{source} holds chat messages but the model's tokenizer has no chat template",
            hint='use plain {"text": ...} records for this model',
        )
    rng = random.Random(SEED)
    rng.shuffle(texts)
    out = [render_chat(tokenizer, m) for m in chats[:samples]]
    chat_count = len(out)
    want_chat = samples // 2 if chat and has_template and not chats else 0
    for packed in pack(tokenizer, texts, seq_len, cycle=samples - len(out)):
        if len(out) >= samples:
            break
        if chat_count < want_chat:
            packed = render_chat(tokenizer, as_conversation(packed, rng))
            chat_count += 1
        out.append(packed)
    return CalibrationSet(out, source, seq_len, chat_count, source_sha)


def pack(tokenizer, texts: list[str], seq_len: int, cycle: int):
    """Yield strings of at least ``seq_len`` tokens made of whole paragraphs; when the data runs
    out, start over from a different offset so up to ``cycle`` samples can still differ."""
    if not texts:
        return
    for round_ in range(max(1, cycle)):
        start = (round_ * 7) % len(texts)  # a different starting paragraph each pass
        order = texts[start:] + texts[:start]
        current, tokens = [], 0
        for text in order:
            current.append(text)
            tokens += len(tokenizer(text, add_special_tokens=False)["input_ids"]) + 2
            if tokens >= seq_len:
                yield "\n\n".join(current)
                current, tokens = [], 0
        if current and round_ == 0 and tokens >= seq_len // 2:
            yield "\n\n".join(current)


def as_conversation(text: str, rng: random.Random) -> list[dict]:
    """A user turn with the text's first line, the assistant continuing with the rest."""
    head, _, rest = text.partition("\n")
    if not rest.strip():
        head, rest = "", text
    user = rng.choice(CHAT_PROMPTS) + (f"\n\n{head}" if head else "")
    return [{"role": "user", "content": user}, {"role": "assistant", "content": rest.strip()}]


def render_chat(tokenizer, messages: list[dict]) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False)
