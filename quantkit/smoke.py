"""The smoke chat: a fixed multi-turn conversation through the artifact's own chat template,
greedy, in its own engine. It catches what averages over text do not: a broken template, leaking
control tokens, a model that never stops, loops, or produces NaN logits."""

from dataclasses import asdict, dataclass, field

import numpy as np

SYSTEM = "You are a helpful assistant. Keep your answers short."
# One code-review turn, one that needs the previous answer, one Chinese turn (the seed deployments
# checked "你好" and a code review by eye).
TURNS = (
    "Review this Python function and point out the bug in one or two sentences:\n\n"
    "```python\ndef average(numbers):\n    total = 0\n    for n in numbers:\n        total += n\n"
    "    return total / len(numbers) + 1\n```",
    "Now write the corrected function.",
    "你好！你是谁？",
)
NGRAM = 4  # tokens per n-gram for the repetition check


@dataclass
class SmokeOptions:
    max_tokens: int = 256  # per reply; a reply must stop by itself before this
    max_repeat_ratio: float = 0.5  # share of repeated 4-grams above which a reply is degenerate


@dataclass
class SmokeTurn:
    user: str
    reply: str
    tokens: int
    stopped: bool  # ended with an end-of-turn token before max_tokens
    repeat_ratio: float
    finite: bool
    problems: list[str] = field(default_factory=list)


@dataclass
class SmokeResult:
    passed: bool
    turns: list[SmokeTurn]
    failures: list[str]
    seconds: float

    def transcript(self) -> str:
        lines = [f"[system] {SYSTEM}"]
        for turn in self.turns:
            lines += [f"[user] {turn.user}", f"[assistant] {turn.reply}"]
        return "\n".join(lines)

    def to_dict(self) -> dict:
        data = asdict(self)
        data["transcript"] = self.transcript()
        return data


def repeat_ratio(ids: list[int], n: int = NGRAM) -> float:
    """Share of a reply's n-grams that already occurred earlier in it (0 = no repetition)."""
    grams = [tuple(ids[i:i + n]) for i in range(len(ids) - n + 1)]
    return 0.0 if not grams else round(1 - len(set(grams)) / len(grams), 3)


def greedy_reply(engine, prompt_ids: list[int], max_tokens: int) -> tuple[list[int], bool, bool]:
    """Greedy generation on the engine's own forward path, checking every step's logits."""
    engine.reset()
    logits = engine.forward(prompt_ids)
    ids: list[int] = []
    finite = True
    for _ in range(max_tokens):
        finite = finite and bool(np.isfinite(logits).all())
        token = int(np.argmax(logits))
        if token in engine.eos_ids:
            return ids, True, finite
        ids.append(token)
        if len(ids) < max_tokens:
            logits = engine.forward([token])
    return ids, False, finite


def check_turn(engine, user: str, ids: list[int], stopped: bool, finite: bool, options: SmokeOptions) -> SmokeTurn:
    text = engine.detokenize(ids)
    turn = SmokeTurn(user=user, reply=text.strip(), tokens=len(ids), stopped=stopped,
                     repeat_ratio=repeat_ratio(ids), finite=finite)
    if not turn.reply:
        turn.problems.append("empty reply")
    if "\ufffd" in text:
        turn.problems.append("reply is not valid UTF-8")
    if not stopped:
        turn.problems.append(f"did not stop within {options.max_tokens} tokens")
    leaked = sorted(tok for tok in engine.special_tokens if tok and tok in text)
    if leaked:
        turn.problems.append(f"template/special tokens leaked: {', '.join(leaked[:5])}")
    if turn.repeat_ratio > options.max_repeat_ratio:
        turn.problems.append(f"degenerate repetition ({turn.repeat_ratio:.0%} repeated {NGRAM}-grams)")
    if not finite:
        turn.problems.append("NaN/inf logits")
    return turn


def smoke_chat(engine, options: SmokeOptions | None = None, on_turn=None) -> SmokeResult:
    """Run the fixed conversation on ``engine``; every turn's reply joins the history."""
    import time

    options = options or SmokeOptions()
    started = time.perf_counter()
    messages = [{"role": "system", "content": SYSTEM}]
    turns = []
    for user in TURNS:
        messages.append({"role": "user", "content": user})
        ids, stopped, finite = greedy_reply(engine, engine.chat_prompt(messages), options.max_tokens)
        turn = check_turn(engine, user, ids, stopped, finite, options)
        turns.append(turn)
        messages.append({"role": "assistant", "content": turn.reply})
        if on_turn:
            on_turn(turn)
    failures = [f"turn {i + 1}: {p}" for i, t in enumerate(turns) for p in t.problems]
    return SmokeResult(passed=not failures, turns=turns, failures=failures,
                       seconds=round(time.perf_counter() - started, 2))
