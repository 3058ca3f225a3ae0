"""`quantkit chat`: the input rules as a function, then the real terminal program (pexpect) against
SmolLM2 through transformers and through llama.cpp (the bundled Q4_1 GGUF)."""

import io
import json
import os
import signal
import sys

import pexpect
import pytest

from quantkit.serve.chat import is_command, read_message

PROMPT = ">>> "


def test_read_message_multiline_and_commands():
    typed = "one line\nfirst line\\\nsecond line\nthird\\\n!!!\n!!!\n\n\nhello\n\n/save out.json\nclear\nlast words"
    inp, out = io.StringIO(typed), io.StringIO()
    assert read_message(inp, out) == "one line"  # Enter sends
    assert read_message(inp, out) == "first line\nsecond line"  # a trailing backslash goes on
    assert read_message(inp, out) == "third"  # the seed's '!!!' line sends; a lone one is ignored
    assert read_message(inp, out) == "hello"  # blank lines before a message are skipped
    assert read_message(inp, out) == "/save out.json"
    assert read_message(inp, out) == "clear"
    assert read_message(inp, out) == "last words"  # end of input sends what was typed
    assert read_message(inp, out) is None
    assert out.getvalue().count(PROMPT) >= 5
    assert is_command("quit") and is_command("/quit") and not is_command("clear the table please")


def spawn_chat(path, *extra, timeout=180):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TERM": "dumb", "NO_COLOR": "1"}
    child = pexpect.spawn(
        sys.executable,
        ["-m", "quantkit", "chat", str(path), "--temperature", "0", "--threads", "1", *extra],
        env=env,
        encoding="utf-8",
        timeout=timeout,
        dimensions=(50, 400),
    )
    child.expect_exact(PROMPT)  # loaded: the first prompt is shown
    return child


def say(child, text, timeout=120):
    """Type ``text`` and Enter, return what the model printed before the next prompt."""
    child.sendline(text)
    child.expect_exact(PROMPT, timeout=timeout)
    return child.before


def finish(child):
    child.sendline("quit")
    child.expect(pexpect.EOF, timeout=30)
    child.close()
    assert child.exitstatus == 0, child.before


@pytest.mark.slow
def test_chat_terminal_transformers(smollm2, tmp_path):
    child = spawn_chat(smollm2, "--max-tokens", "24", "--system", "You are a helpful assistant.")
    try:
        assert "Paris" in say(child, "What is the capital of France?")
        # multi-line input: two lines pasted at once are one message
        child.send("Name one color.\nJust one word.\n")
        child.expect_exact(PROMPT, timeout=120)
        saved = tmp_path / "chat.json"
        child.sendline(f"/save {saved}")
        child.expect_exact("saved to")
        child.expect_exact(PROMPT)
        messages = json.loads(saved.read_text())["messages"]
        assert [m["role"] for m in messages] == ["system", "user", "assistant", "user", "assistant"]
        assert messages[3]["content"] == "Name one color.\nJust one word."
        assert "Paris" in messages[2]["content"]
        child.sendline("/clear")
        child.expect_exact("history cleared")
        child.expect_exact(PROMPT)
        say(child, "Hi!")
        child.sendline(f"/save {saved}")
        child.expect_exact(PROMPT)
        after = json.loads(saved.read_text())["messages"]
        assert [m["role"] for m in after] == ["system", "user", "assistant"]  # the system prompt survives /clear
        finish(child)
    finally:
        child.close(force=True)


@pytest.mark.slow
def test_chat_terminal_gguf_ctrl_c_and_clear(tmp_path):
    from quantkit.hub.bundled import bundled_gguf

    # With the template's default system prompt this Q4_1 file answers in French riddles; a plain one keeps it on track.
    # A high token cap keeps the story streaming long after Ctrl-C is sent, even on a busy machine.
    child = spawn_chat(
        bundled_gguf("bundled:smollm2-135m-instruct"), "--max-tokens", "1500", "--system", "You are a helpful assistant."
    )
    try:
        assert "Paris" in say(child, "What is the capital of France?")
        # Ctrl-C during a long reply stops it and the chat goes on
        child.sendline("Write a very long story \\")  # a trailing backslash continues the message
        child.expect_exact("... ")
        child.sendline("about a dragon and a knight.")
        child.expect_exact("knight.")  # the echo of what was typed; the reply comes after it
        child.expect(r"\w+ \w+ \w+", timeout=60)  # the reply has started streaming
        child.kill(signal.SIGINT)
        child.expect_exact("[stopped]", timeout=30)
        child.expect_exact(PROMPT, timeout=30)
        assert child.isalive()
        child.sendline("clear")  # the seed loop's plain word works too
        child.expect_exact("history cleared")
        child.expect_exact(PROMPT)
        saved = tmp_path / "after.json"
        assert "Paris" in say(child, "What is the capital of France?")
        child.sendline(f"/save {saved}")
        child.expect_exact(PROMPT)
        assert [m["role"] for m in json.loads(saved.read_text())["messages"]] == ["system", "user", "assistant"]
        child.sendline("/quit")
        child.expect(pexpect.EOF, timeout=30)
        child.close()
        assert child.exitstatus == 0
    finally:
        child.close(force=True)
