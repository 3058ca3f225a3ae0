"""The web chat page (quantkit/data/chat.html) in Debian's headless Chromium, driven over the
DevTools protocol, against a live `quantkit serve` of the bundled GGUF: type, send, read the
streamed reply (rendered Markdown), keep the conversation, stop a reply, see 401/429/413 errors.
`make test` installs chromium when it is missing (its test-deps rule)."""

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from test_serve import start_server, stop_server

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
KEY = "web-key"
# QUANTKIT_DOCS_SCREENSHOT=1 also refreshes docs/img/web-chat.png (a plain run leaves the tree clean).
DOCS_SHOT = Path(__file__).parent.parent / "docs" / "img" / "web-chat.png"


class Browser:
    """One headless Chromium page; ``js`` evaluates an expression (awaiting promises)."""

    def __init__(self, profile: Path):
        import websocket

        assert Path(CHROMIUM).exists(), "chromium is missing: apt-get install -y chromium (`make test-deps` does)"
        self.proc = subprocess.Popen(
            [
                CHROMIUM,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-dev-shm-usage",
                f"--user-data-dir={profile}",
                "--remote-debugging-port=0",
                "--window-size=1000,900",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        port_file = profile / "DevToolsActivePort"
        deadline = time.time() + 60
        while not (port_file.exists() and port_file.read_text().strip()) and time.time() < deadline:
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        pages = [t for t in httpx.get(f"http://127.0.0.1:{port}/json/list", timeout=10).json() if t["type"] == "page"]
        self.ws = websocket.create_connection(pages[0]["webSocketDebuggerUrl"], timeout=60, suppress_origin=True)
        self.next_id = 0

    def call(self, method: str, **params):
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv())
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message["result"]

    def js(self, expression: str):
        result = self.call("Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression[:80]}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def open(self, url: str) -> None:
        self.call("Page.enable")
        self.call("Page.navigate", url=url)
        self.wait("document.readyState === 'complete' && !!document.getElementById('send')")

    def wait(self, condition: str, timeout: float = 120):
        deadline = time.time() + timeout
        while time.time() < deadline:
            value = self.js(condition)
            if value:
                return value
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {condition}")

    def send(self, text: str) -> None:
        """Type ``text`` into the box and press Enter (a real key event)."""
        self.js("document.getElementById('input').focus()")
        self.call("Input.insertText", text=text)
        for kind in ("keyDown", "keyUp"):
            self.call(
                "Input.dispatchKeyEvent",
                type=kind,
                key="Enter",
                code="Enter",
                windowsVirtualKeyCode=13,
                **({"text": "\r"} if kind == "keyDown" else {}),
            )

    def bubbles(self):
        return self.js("""[...document.querySelectorAll('#log .msg')].map((d) => ({cls: d.className,
            text: d.innerText, html: d.innerHTML, done: d.dataset.done === '1'}))""")

    def screenshot(self, file: Path) -> None:
        import base64

        file.write_bytes(base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"]))

    def close(self) -> None:
        try:
            self.ws.close()
        finally:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


@pytest.fixture(scope="module")
def server():
    from quantkit.hub.bundled import bundled_gguf

    proc, url = start_server(
        bundled_gguf("bundled:smollm2-135m-instruct"),
        "--api-key",
        KEY,
        "--parallel",
        "1",
        "--queue-size",
        "1",
        "--max-body-bytes",
        "4096",
        "--model-name",
        "smol",
    )
    yield url
    stop_server(proc)


@pytest.fixture
def browser(tmp_path):
    page = Browser(tmp_path / "profile")
    yield page
    page.close()


def last_done(browser, count):
    return browser.wait(
        f"(() => {{ const m = document.querySelectorAll('#log .msg');"
        f" return m.length >= {count} && m[{count - 1}].dataset.done === '1'; }})()"
    )


@pytest.mark.slow
def test_web_chat_streams_markdown_keeps_the_conversation_and_stops(server, browser, tmp_path):
    browser.open(server + "/")
    browser.js(f"""(() => {{ document.getElementById('api-key').value = '{KEY}';
        document.getElementById('system').value = 'You are a helpful assistant.';
        document.getElementById('max-tokens').value = '24';
        document.getElementById('temperature').value = '0'; }})()""")
    browser.send("What is the capital of France?")
    # The reply streams in: some text shows before the reply is done.
    browser.wait(
        "(() => { const m = document.querySelectorAll('#log .msg'); return m.length === 2 && "
        "m[1].innerText.length > 0 && m[1].dataset.done !== '1'; })()",
        timeout=60,
    )
    last_done(browser, 2)
    bubbles = browser.bubbles()
    assert [b["cls"] for b in bubbles] == ["msg user", "msg assistant"]
    assert "Paris" in bubbles[1]["text"] and "<p>" in bubbles[1]["html"]  # rendered, not raw text
    browser.send("Write a Python function that adds two numbers, in a code block.")
    last_done(browser, 4)
    reply = browser.bubbles()[3]
    assert "error" not in reply["cls"]
    assert "<pre><code" in reply["html"], reply["html"]  # the fenced code became a code block
    # The conversation stays: after a reload the page shows the same turns from this browser's store.
    before = [b["text"] for b in browser.bubbles()]
    browser.open(server + "/")
    assert [b["text"] for b in browser.bubbles()] == before and len(before) == 4
    # Stop: a long reply is cut when Stop is clicked, and the page says so.
    browser.js("document.getElementById('max-tokens').value = '400'")
    browser.send("Write a very long story about a dragon and a knight.")
    browser.wait(
        "document.querySelectorAll('#log .msg').length === 6 && "
        "document.querySelectorAll('#log .msg')[5].innerText.split(' ').length > 5",
        timeout=60,
    )
    browser.js("document.getElementById('stop').click()")
    last_done(browser, 6)
    stopped = browser.bubbles()[5]
    assert "stopped" in stopped["cls"] and "[stopped]" in stopped["text"]
    assert len(stopped["text"].split()) < 300
    assert browser.js("document.getElementById('send').disabled") is False
    browser.js("document.getElementById('api-key').value = ''")  # no key in the picture
    shot = tmp_path / "web-chat.png"
    browser.screenshot(shot)
    assert shot.read_bytes()[:4] == b"\x89PNG"
    if os.environ.get("QUANTKIT_DOCS_SCREENSHOT") == "1":
        shutil.copyfile(shot, DOCS_SHOT)


@pytest.mark.slow
def test_web_chat_shows_errors_and_escapes_html(server, browser):
    browser.open(server + "/")
    browser.js("localStorage.clear(); document.getElementById('max-tokens').value = '8'")
    browser.send("Hello")  # no API key given
    last_done(browser, 2)
    error = browser.bubbles()[1]
    assert "error" in error["cls"] and "error 401" in error["text"] and "API key" in error["text"]
    browser.js(f"document.getElementById('api-key').value = '{KEY}'")
    browser.send("x" * 5000)  # over --max-body-bytes 4096
    last_done(browser, 4)
    assert "error 413" in browser.bubbles()[3]["text"]
    # 429: while one reply runs and one waits, the third is refused.
    from concurrent.futures import ThreadPoolExecutor

    body = {"messages": [{"role": "user", "content": "Write a long story."}], "max_tokens": 120}
    with ThreadPoolExecutor(2) as pool:
        busy = [
            pool.submit(
                httpx.post, f"{server}/v1/chat/completions", json=body, timeout=300, headers={"Authorization": f"Bearer {KEY}"}
            )
            for _ in range(2)
        ]
        browser.wait("fetch('/health').then((r) => r.json()).then((h) => h.queue.running + h.queue.waiting === 2)", timeout=60)
        browser.send("Hello again")
        last_done(browser, 6)
        refused = browser.bubbles()[5]
        assert "error" in refused["cls"] and "error 429" in refused["text"] and "busy" in refused["text"], refused
        assert [f.result().status_code for f in busy] == [200, 200]
    # Model text is escaped: a reply can never inject markup.
    rendered = browser.js("renderMarkdown('<img src=x onerror=alert(1)> **bold** `<b>` [a](javascript:alert(1))')")
    assert "<img" not in rendered and "&lt;img" in rendered and "<strong>bold</strong>" in rendered
    assert "<code>&lt;b&gt;</code>" in rendered and "javascript:" not in rendered.split("href")[-1][:20]
    assert "<a " not in rendered
