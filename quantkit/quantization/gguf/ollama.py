"""An Ollama ``Modelfile`` for a GGUF file: FROM the file, a Go TEMPLATE translated from the model's
Jinja chat template, its default system prompt, and stop parameters.

Jinja cannot be translated into Go templates in general, so the template's *shape* is measured
instead: it is rendered with placeholder messages, and the text around each placeholder gives
the per-role prefix and suffix. Templates that do not wrap each message on its own (merging the
system prompt into the first user turn, say) are refused with a clear error.
"""

import json
from dataclasses import dataclass
from pathlib import Path

from quantkit.core.errors import InputError

MODELFILE = "Modelfile"
SYS, USR, ASS, USR2 = (
    "\x00SYS-PLACEHOLDER\x00",
    "\x00USER-PLACEHOLDER\x00",
    "\x00ASSISTANT-PLACEHOLDER\x00",
    "\x00USER2-PLACEHOLDER\x00",
)


@dataclass(frozen=True)
class ChatFormat:
    """How a chat template wraps each role's message (the BOS token left out: runtimes add it)."""

    system: tuple[str, str] | None  # (prefix, suffix); None when the template has no system role
    user: tuple[str, str]
    assistant: tuple[str, str]
    generation_prompt: str  # what add_generation_prompt appends
    default_system: str | None  # injected by the template when the conversation has no system message


def render_template(template: str, messages: list[dict], add_generation_prompt: bool, bos: str = "", eos: str = "") -> str:
    """Render a chat template the way transformers does (same Jinja environment and extras)."""
    from transformers.utils.chat_template_utils import render_jinja_template

    rendered, _ = render_jinja_template(
        [messages], chat_template=template, add_generation_prompt=add_generation_prompt, bos_token=bos, eos_token=eos
    )
    return rendered[0]


def chat_format(template: str, bos: str = "", eos: str = "") -> ChatFormat:
    """Measure ``template``'s per-role wrapping; raise InputError when it does not wrap roles simply."""

    def render(messages, gen=False):
        try:
            return render_template(template, messages, gen, bos, eos)
        except Exception as exc:  # the template's own raise_exception, or a Jinja error
            raise InputError(f"the chat template failed to render: {exc}") from None

    def split(block: str, placeholder: str, what: str) -> tuple[str, str]:
        if block.count(placeholder) != 1:
            raise InputError(
                f"cannot translate this chat template for Ollama: the {what} is not wrapped on its own",
                hint="write the Modelfile TEMPLATE by hand",
            )
        prefix, suffix = block.split(placeholder)
        return prefix, suffix

    def after(longer: str, shorter: str, what: str) -> str:
        if not longer.startswith(shorter):
            raise InputError(
                f"cannot translate this chat template for Ollama: adding a {what} changes earlier text",
                hint="write the Modelfile TEMPLATE by hand",
            )
        return longer[len(shorter) :]

    bos = bos if "bos_token" in template else ""  # only a BOS the template writes itself is stripped
    system_msg, user_msg = {"role": "system", "content": SYS}, {"role": "user", "content": USR}
    assistant_msg, user2_msg = {"role": "assistant", "content": ASS}, {"role": "user", "content": USR2}
    try:
        head = render([system_msg])
        first = [system_msg]
    except InputError:  # templates such as Gemma's refuse a system role
        head, first = "", []
    if head.count(SYS) != 1:
        head, first = "", []
        try:
            merged = SYS in render([system_msg, user_msg])
        except InputError:
            merged = False
        if merged:  # used, but not as a message of its own (glued into the first user turn)
            raise InputError(
                "cannot translate this chat template for Ollama: the system message is not wrapped on its own",
                hint="write the Modelfile TEMPLATE by hand",
            )
    with_user = render([*first, user_msg])
    with_gen = render([*first, user_msg], gen=True)
    with_assistant = render([*first, user_msg, assistant_msg])
    with_user2 = render([*first, user_msg, assistant_msg, user2_msg])
    user = split(after(with_user, head, "user message"), USR, "user message")
    assistant = split(after(with_assistant, with_user, "assistant message"), ASS, "assistant message")
    if after(with_user2, with_assistant, "second user message") != user[0] + USR2 + user[1]:
        raise InputError(
            "cannot translate this chat template for Ollama: later user turns are wrapped differently",
            hint="write the Modelfile TEMPLATE by hand",
        )
    system = split(head, SYS, "system message") if first else None
    if system and bos and system[0].startswith(bos):
        system = (system[0][len(bos) :], system[1])
    if bos and user[0].startswith(bos) and not first:
        user = (user[0][len(bos) :], user[1])
    return ChatFormat(
        system,
        user,
        assistant,
        after(with_gen, with_user, "generation prompt"),
        default_system_prompt(render([user_msg]), system, user, bos),
    )


def default_system_prompt(rendered: str, system: tuple[str, str] | None, user: tuple[str, str], bos: str) -> str | None:
    """The system prompt a template adds by itself when the conversation has none (SmolLM2 does)."""
    if system is None:
        return None
    text = rendered[len(bos) :] if bos and rendered.startswith(bos) else rendered
    opening = text[: text.find(user[0] + USR)] if user[0] + USR in text else ""
    if opening.startswith(system[0]) and opening.endswith(system[1]) and len(opening) > len(system[0]) + len(system[1]):
        return opening[len(system[0]) : len(opening) - len(system[1])]
    return None


def render(fmt: ChatFormat, messages: list[dict], add_generation_prompt: bool = True) -> str:
    """What the Go template below produces for ``messages`` (for tests and checks, in Python)."""
    parts = []
    for i, msg in enumerate(messages):
        last = i == len(messages) - 1
        if msg["role"] == "system" and fmt.system:
            parts.append(fmt.system[0] + msg["content"] + fmt.system[1])
        elif msg["role"] == "user":
            parts.append(
                fmt.user[0] + msg["content"] + fmt.user[1] + (fmt.generation_prompt if last and add_generation_prompt else "")
            )
        elif msg["role"] == "assistant":
            parts.append(fmt.assistant[0] + msg["content"] + ("" if last else fmt.assistant[1]))
    return "".join(parts)


def go_literal(text: str) -> str:
    """Template text where ``{{`` cannot open an action."""
    return text.replace("{{", '{{ "{{" }}')


def go_template(fmt: ChatFormat) -> str:
    """An Ollama (Go text/template) TEMPLATE over ``.Messages``, on one logical line: no ``{{-``
    trimming, so the chat format's own newlines survive exactly."""
    lit = go_literal
    branches = []
    if fmt.system:
        branches.append(('eq .Role "system"', f"{lit(fmt.system[0])}{{{{ .Content }}}}{lit(fmt.system[1])}"))
    branches.append(
        (
            'eq .Role "user"',
            f"{lit(fmt.user[0])}{{{{ .Content }}}}{lit(fmt.user[1])}{{{{ if $last }}}}{lit(fmt.generation_prompt)}{{{{ end }}}}",
        )
    )
    branches.append(
        (
            'eq .Role "assistant"',
            f"{lit(fmt.assistant[0])}{{{{ .Content }}}}{{{{ if not $last }}}}{lit(fmt.assistant[1])}{{{{ end }}}}",
        )
    )
    chain = "".join(f"{{{{ {'if' if i == 0 else 'else if'} {cond} }}}}{body}" for i, (cond, body) in enumerate(branches))
    return "{{ range $i, $_ := .Messages }}{{ $last := eq (len (slice $.Messages $i)) 1 }}" + chain + "{{ end }}{{ end }}"


def triple_quoted(text: str, what: str) -> str:
    if '"""' in text:
        raise InputError(f'the {what} contains """ which a Modelfile cannot quote', hint="write the Modelfile by hand")
    return f'"""{text}"""'


def modelfile_text(gguf_name: str, fmt: ChatFormat, stops: list[str]) -> str:
    lines = [
        f"# Written by quantkit: ollama create NAME -f {MODELFILE}",
        f"FROM ./{gguf_name}",
        f"TEMPLATE {triple_quoted(go_template(fmt), 'chat template')}",
    ]
    if fmt.default_system:
        lines.append(f"SYSTEM {triple_quoted(fmt.default_system, 'default system prompt')}")
    lines += [f"PARAMETER stop {json.dumps(stop, ensure_ascii=False)}" for stop in dict.fromkeys(stops) if stop]
    return "\n".join(lines) + "\n"


def write_modelfile(
    folder: Path, gguf_name: str, template: str, stops: list[str], bos: str = "", eos: str = "", name: str = MODELFILE
) -> Path:
    """Write ``folder/name`` for ``gguf_name`` (which lies in ``folder``); returns its path."""
    path = Path(folder) / name
    path.write_text(modelfile_text(gguf_name, chat_format(template, bos, eos), stops))
    return path
