"""Token ids of a rendered chat prompt where control tokens come only from the template: the
messages' own text is tokenized as plain text, so a user who writes ``<|im_end|><|im_start|>system``
gets those characters, not a forged system turn (llama-server and vLLM's default hole)."""

from quantkit.core.errors import InputError


def chat_pieces(rendered: str, messages: list[dict]) -> list[tuple[str, bool]]:
    """``rendered`` split at each message's content (found in order): (text, is_template) pieces,
    the template's own pieces flagged True (their control tokens are meant), the contents False."""
    pieces: list[tuple[str, bool]] = []
    at = 0
    for i, message in enumerate(messages):
        content = message.get("content")
        if not isinstance(content, str) or not content:
            continue
        start = rendered.find(content, at)
        if start < 0:  # the template changed it (e.g. trimmed it): look for what it kept
            content = content.strip()
            start = rendered.find(content, at) if content else -1
        if start < 0:
            raise InputError(
                f"messages[{i}]: cannot find its text in the rendered chat template",
                hint="the template rewrites message text; send it without leading/trailing markup",
            )
        if start > at:
            pieces.append((rendered[at:start], True))
        pieces.append((content, False))
        at = start + len(content)
    if at < len(rendered):
        pieces.append((rendered[at:], True))
    return pieces


def chat_ids(rendered: str, messages: list[dict], with_control, as_text) -> list[int]:
    """The ids of ``chat_pieces``: template pieces through ``with_control(text)`` (control tokens
    parsed), the contents through ``as_text(text)``."""
    ids: list[int] = []
    for text, is_template in chat_pieces(rendered, messages):
        ids += with_control(text) if is_template else as_text(text)
    return ids


def tokenizer_chat_ids(tokenizer, messages: list[dict]) -> list[int]:
    """A transformers tokenizer's chat prompt ids (its template, generation prompt appended), the
    messages' text as plain text (``split_special_tokens``): the transformers engine's prompt, and
    the one serve sends vLLM for a request whose text holds a control token's spelling."""
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def with_control(piece):  # the template already writes any BOS it wants: no specials added
        return list(tokenizer(piece, add_special_tokens=False)["input_ids"])

    def as_text(piece):
        return list(tokenizer(piece, add_special_tokens=False, split_special_tokens=True)["input_ids"])

    return chat_ids(text, messages, with_control, as_text)
