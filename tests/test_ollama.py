"""The Ollama Modelfile: the Go TEMPLATE is measured from the Jinja chat template, so the tests
render conversations both ways and demand the same text; `ollama create` runs where the binary is."""

import json
import os
import shutil
import subprocess

import pytest

from quantkit.core.errors import InputError
from quantkit.quantization.gguf.ollama import chat_format, go_template, modelfile_text, render, render_template, write_modelfile

CONVERSATIONS = [
    [{"role": "user", "content": "Hi"}],
    [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Two\nlines"},
    ],
]
LLAMA3 = (
    "{{ bos_token }}{% for message in messages %}<|start_header_id|>{{ message['role'] }}<|end_header_id|>\n\n"
    "{{ message['content'] | trim }}<|eot_id|>{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)
# Mistral-style: the system prompt is glued into the first user turn, which Ollama's per-message
# template cannot express.
MERGED_SYSTEM = (
    "{% for m in messages %}{% if m['role'] == 'user' %}[INST] {% if loop.index == 2 %}{{ messages[0]['content'] }} "
    "{% endif %}{{ m['content'] }} [/INST]{% elif m['role'] == 'assistant' %}{{ m['content'] }}</s>{% endif %}{% endfor %}"
)


@pytest.fixture(scope="module")
def smollm2_template(smollm2) -> str:
    return (
        json.loads((smollm2 / "tokenizer_config.json").read_text()).get("chat_template")
        or (smollm2 / "chat_template.jinja").read_text()
    )


def test_chatml_pieces_and_default_system(smollm2_template):
    fmt = chat_format(smollm2_template)
    assert fmt.user == ("<|im_start|>user\n", "<|im_end|>\n")
    assert fmt.assistant == ("<|im_start|>assistant\n", "<|im_end|>\n")
    assert fmt.generation_prompt == "<|im_start|>assistant\n"
    assert fmt.default_system.startswith("You are a helpful AI assistant named SmolLM")


@pytest.mark.parametrize("conversation", CONVERSATIONS)
def test_translated_template_renders_like_the_jinja_one(smollm2_template, conversation):
    fmt = chat_format(smollm2_template)
    expected = render_template(smollm2_template, conversation, True)
    if conversation[0]["role"] != "system":  # Ollama injects the Modelfile's SYSTEM as a message
        conversation = [{"role": "system", "content": fmt.default_system}, *conversation]
    assert render(fmt, conversation) == expected


def test_bos_written_by_the_template_is_left_to_the_runtime():
    fmt = chat_format(LLAMA3, bos="<|begin_of_text|>")
    assert fmt.system == ("<|start_header_id|>system<|end_header_id|>\n\n", "<|eot_id|>")
    assert fmt.default_system is None
    expected = render_template(LLAMA3, CONVERSATIONS[1], True, bos="<|begin_of_text|>")
    assert "<|begin_of_text|>" + render(fmt, CONVERSATIONS[1]) == expected


def test_templates_that_merge_roles_are_refused():
    with pytest.raises(InputError, match="cannot translate this chat template"):
        chat_format(MERGED_SYSTEM)


def test_modelfile_text(smollm2_template):
    fmt = chat_format(smollm2_template)
    text = modelfile_text("m-Q4_K_M.gguf", fmt, ["<|im_end|>", "<|im_start|>", "<|im_end|>"])
    commands = parse_modelfile(text)
    assert commands["FROM"] == ["./m-Q4_K_M.gguf"]
    assert commands["PARAMETER"] == ['stop "<|im_end|>"', 'stop "<|im_start|>"']
    assert commands["SYSTEM"] == [fmt.default_system]
    template = commands["TEMPLATE"][0]
    assert template == go_template(fmt)
    assert template.startswith("{{ range $i, $_ := .Messages }}") and "{{-" not in template
    assert template.count("{{ if") + template.count("{{ range") == template.count("{{ end }}")
    assert '{{ else if eq .Role "user" }}<|im_start|>user\n{{ .Content }}<|im_end|>\n' in template


def test_literal_braces_cannot_open_go_actions():
    template = "{% for m in messages %}{{ '{{' }}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    assert '{{ "{{" }}user: {{ .Content }}' in go_template(chat_format(template))


# Ollama executes TEMPLATE with Go's text/template over .Messages (Role, Content); this program does
# the same for each case on stdin and prints the renderings (or the Go error) as JSON.
GO_RENDER = r"""package main

import (
	"encoding/json"
	"os"
	"strings"
	"text/template"
)

type Message struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

type Case struct {
	Template string    `json:"template"`
	Messages []Message `json:"messages"`
}

func main() {
	var cases []Case
	if err := json.NewDecoder(os.Stdin).Decode(&cases); err != nil {
		panic(err)
	}
	out := []string{}
	for _, c := range cases {
		t, err := template.New("modelfile").Parse(c.Template)
		if err != nil {
			out = append(out, "GO ERROR: "+err.Error())
			continue
		}
		var b strings.Builder
		if err := t.Execute(&b, map[string]any{"Messages": c.Messages}); err != nil {
			out = append(out, "GO ERROR: "+err.Error())
			continue
		}
		out = append(out, b.String())
	}
	json.NewEncoder(os.Stdout).Encode(out)
}
"""
# Content that must pass through untouched: Go actions, HTML, newlines, non-ASCII.
TRICKY = "Use {{ .Content }} and <b>&amp;</b>\nthen 日本語 🦙"
GO_CONVERSATIONS = {
    "user only": [{"role": "user", "content": "Hi"}],
    "system, ends in user": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": TRICKY},
    ],
    "no system, ends in assistant": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hel"}],
    "system, ends in assistant": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": TRICKY},
        {"role": "assistant", "content": "Sure"},
    ],
}


@pytest.fixture(scope="module")
def go_render(tmp_path_factory):
    """A function rendering [(template, messages)] with Go's text/template (the real `go` toolchain;
    `make test-deps` installs Debian's golang-go where it is missing)."""
    go = shutil.which("go")
    assert go, "Go is missing: apt-get install -y golang-go (`make test-deps` does)"
    folder = tmp_path_factory.mktemp("go")
    (folder / "render.go").write_text(GO_RENDER)
    env = {**os.environ, "GOFLAGS": "", "GOPROXY": "off", "GO111MODULE": "off", "GOPATH": str(folder / "gopath")}
    built = subprocess.run(
        [go, "build", "-o", str(folder / "render"), str(folder / "render.go")],
        cwd=folder,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert built.returncode == 0, built.stderr

    def render_all(cases: list[tuple[str, list[dict]]]) -> list[str]:
        data = json.dumps([{"template": t, "messages": m} for t, m in cases])
        done = subprocess.run([str(folder / "render")], input=data, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    return render_all


def jinja_expected(template: str, messages: list[dict], bos: str = "") -> str:
    """What the model expects, by its own Jinja template: a generation prompt after a user turn;
    after an assistant turn, the text up to the end of its content (transformers'
    continue_final_message), which is how Ollama continues a partial reply."""
    if messages[-1]["role"] == "user":
        text = render_template(template, messages, True, bos=bos)
    else:
        text = render_template(template, messages, False, bos=bos)
        text = text[: text.rindex(messages[-1]["content"]) + len(messages[-1]["content"])]
    return text[len(bos) :] if bos and text.startswith(bos) else text  # the runtime adds BOS itself


@pytest.mark.parametrize("which", ["smollm2", "llama3"])
def test_go_executes_the_modelfile_template_like_jinja(which, smollm2_template, go_render, tmp_path):
    """The TEMPLATE as written into the Modelfile, run by Go's text/template with Ollama's message
    list (its SYSTEM injected as the first message when the conversation has none)."""
    template, bos = (smollm2_template, "") if which == "smollm2" else (LLAMA3, "<|begin_of_text|>")
    path = write_modelfile(tmp_path, "m.gguf", template, ["<|im_end|>"], bos=bos)
    commands = parse_modelfile(path.read_text())
    go_template_text, system = commands["TEMPLATE"][0], (commands.get("SYSTEM") or [None])[0]
    cases, expected = [], []
    for messages in GO_CONVERSATIONS.values():
        sent = messages
        if system and messages[0]["role"] != "system":
            sent = [{"role": "system", "content": system}, *messages]
        cases.append((go_template_text, sent))
        expected.append(jinja_expected(template, messages, bos))
    rendered = go_render(cases)
    for name, got, want in zip(GO_CONVERSATIONS, rendered, expected):
        assert got == want, f"{which}, {name}:\nGo:    {got!r}\nJinja: {want!r}"
    assert which != "smollm2" or system.startswith("You are a helpful AI assistant named SmolLM")


def test_go_really_checks(go_render):
    """The harness fails loudly: a template Go cannot parse, and one that renders differently."""
    broken, wrong = go_render(
        [
            ("{{ range .Messages }}{{ .Content }}", [{"role": "user", "content": "x"}]),
            ("{{ range .Messages }}[{{ .Role }}]{{ end }}", [{"role": "user", "content": "x"}]),
        ]
    )
    assert broken.startswith("GO ERROR:") and wrong == "[user]"


def parse_modelfile(text: str) -> dict[str, list[str]]:
    """Ollama's Modelfile grammar as far as quantkit writes it: COMMAND value, values in triple quotes may span lines."""
    commands: dict[str, list[str]] = {}
    rest = text
    while rest.strip():
        line, _, rest = rest.partition("\n")
        if not line.strip() or line.startswith("#"):
            continue
        command, _, value = line.partition(" ")
        if value.startswith('"""'):
            body = value[3:] + "\n" + rest
            value, _, rest = body.partition('"""')
            rest = rest.lstrip("\n")
        commands.setdefault(command, []).append(value)
    return commands


def test_modelfile_is_what_ollama_create_reads(smollm2_template, go_render, tmp_path):
    """The Modelfile as `ollama create` reads it, checked without the binary (Ollama is on neither
    PyPI nor Debian, so `ollama create` itself is not run by these tests; docs/gguf.md says so):
    FROM names the GGUF beside it, the TEMPLATE Go executes renders like the Jinja template, the
    default system prompt and each stop token are there once."""
    from quantkit.hub.bundled import DEFAULT, bundled_gguf

    gguf = tmp_path / "smollm2.gguf"
    gguf.symlink_to(bundled_gguf(DEFAULT))
    path = write_modelfile(tmp_path, gguf.name, smollm2_template, ["<|im_end|>", "<|im_end|>"])
    commands = parse_modelfile(path.read_text())
    assert set(commands) == {"FROM", "TEMPLATE", "SYSTEM", "PARAMETER"}
    assert (path.parent / commands["FROM"][0]).resolve() == gguf.resolve()
    assert commands["PARAMETER"] == ['stop "<|im_end|>"']
    assert commands["SYSTEM"][0].startswith("You are a helpful AI assistant named SmolLM")
    messages = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "2+2?"},
    ]
    # Ollama sends SYSTEM as the first message when the conversation has none.
    (rendered,) = go_render([(commands["TEMPLATE"][0], [{"role": "system", "content": commands["SYSTEM"][0]}, *messages])])
    assert rendered == jinja_expected(smollm2_template, messages)
