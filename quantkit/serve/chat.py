"""The interactive chat loop over any engine: multi-turn history through the artifact's own chat
template, streamed replies, and the seed loop's commands. A plain function over text streams, so
the CLI, tests and other front ends share it."""

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from quantkit.core.atomic import write_json
from quantkit.core.errors import QuantkitError
from quantkit.engines.base import Engine

SEND_MARK = "!!!"  # the seed loop's "send" mark; Enter sends too
HELP = (
    "Type a message; Enter sends it (end a line with \\ to go on, or paste several lines). "
    "Commands: /clear (or clear), /save FILE, /quit (or quit). Ctrl-C stops a reply."
)


@dataclass
class ChatSettings:
    system: str | None = None
    max_tokens: int = 256
    temperature: float = 0.7
    top_p: float = 0.9
    seed: int | None = None


class ChatSession:
    """The history of one conversation and the engine that continues it."""

    def __init__(self, engine: Engine, settings: ChatSettings):
        self.engine = engine
        self.settings = settings
        self.messages: list[dict] = []
        self.clear()

    def clear(self) -> None:
        self.messages = [{"role": "system", "content": self.settings.system}] if self.settings.system else []

    def reply(self, user_text: str, out: TextIO) -> str:
        """Stream the assistant's answer to ``out`` and add both turns to the history. Ctrl-C
        ends the answer early; what was said so far stays in the history."""
        self.messages.append({"role": "user", "content": user_text})
        s = self.settings
        ids = self.engine.chat_prompt(self.messages)
        pieces: list[str] = []
        tokens = self.engine.stream(ids, s.max_tokens, temperature=s.temperature, top_p=s.top_p, seed=s.seed)
        try:
            for token in tokens:
                pieces.append(token.text)
                out.write(token.text)
                out.flush()
        except KeyboardInterrupt:
            out.write(" [stopped]")
        finally:
            close = getattr(tokens, "close", None)
            if close:
                close()
        out.write("\n")
        out.flush()
        text = "".join(pieces).strip()
        self.messages.append({"role": "assistant", "content": text})
        return text

    def save(self, path: Path) -> Path:
        path = Path(path).expanduser()
        return write_json(path, {"messages": self.messages, "settings": vars(self.settings)})  # never half a transcript


def read_message(inp: TextIO, out: TextIO, prompt: str = ">>> ", more: str = "... ") -> str | None:
    """One user message. Enter sends (as llama-cli, mlx_lm.chat and ollama run do); a line ending
    in a backslash continues on the next line; lines pasted at once (already waiting on a
    terminal) stay one message; the seed's '!!!' line sends what was typed. A command
    is a one-line message. Returns None at end of input. Ctrl-C while typing drops the lines."""
    lines: list[str] = []
    while True:
        out.write(more if lines else prompt)
        out.flush()
        try:
            line = inp.readline()
        except KeyboardInterrupt:
            out.write("\n")
            lines = []
            continue
        if not line:  # end of input: send what was typed, then stop
            return "\n".join(lines) if lines else None
        line = line.rstrip("\r\n")
        if not lines and is_command(line):
            return line.strip()
        if line.strip() == SEND_MARK:
            if lines:
                return "\n".join(lines)
            continue
        if line.endswith("\\"):
            lines.append(line[:-1])
            continue
        if not lines and not line.strip():  # blank lines before a message are skipped
            continue
        lines.append(line)
        try:
            if not _more_waiting(inp):
                return "\n".join(lines)
        except KeyboardInterrupt:
            out.write("\n")
            lines = []


def _more_waiting(inp: TextIO) -> bool:
    """On a terminal, input already waiting when a line arrives is the rest of a paste."""
    import os
    import select

    try:
        fd = inp.fileno()
        if not os.isatty(fd):
            return False
        return bool(select.select([fd], [], [], 0.03)[0])
    except (AttributeError, OSError, ValueError):  # StringIO and friends: no paste to detect
        return False


def is_command(line: str) -> bool:
    """'/word ...', or the seed loop's bare words alone on a line ('clear the table' is a message)."""
    text = line.strip().lower()
    return text in ("quit", "exit", "clear") or (text.startswith("/") and len(text) > 1 and text[1].isalpha())


def chat_loop(
    engine: Engine, settings: ChatSettings | None = None, inp: TextIO | None = None, out: TextIO | None = None
) -> ChatSession:
    """Run the conversation until /quit or end of input; returns the session (its history)."""
    inp = inp or sys.stdin
    out = out or sys.stdout
    session = ChatSession(engine, settings or ChatSettings())
    out.write(HELP + "\n")
    while True:
        text = read_message(inp, out)
        if text is None:
            out.write("\n")
            break
        if is_command(text):
            word, _, arg = text.partition(" ")
            word = word.lower().lstrip("/")
            if word in ("quit", "exit"):
                break
            if word == "clear":
                session.clear()
                out.write("(history cleared)\n")
            elif word == "save" and arg.strip():
                out.write(f"(saved to {session.save(Path(arg.strip()))})\n")
            elif word == "help":
                out.write(HELP + "\n")
            else:
                out.write(f"(unknown command {text!r}; {HELP})\n")
            continue
        try:
            session.reply(text, out)
        except KeyboardInterrupt:  # Ctrl-C before the first token: drop the turn, keep chatting
            del session.messages[-1:]
            out.write(" [stopped]\n")
        except QuantkitError as exc:  # e.g. the history outgrew the context: say so, keep chatting
            del session.messages[-1:]
            out.write(f"\nerror: {exc}\n")
    out.flush()
    return session
