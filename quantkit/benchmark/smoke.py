"""The smoke test: a fixed multi-turn conversation through the artifact's own chat template, greedy,
in its own engine, or - for a model without a chat template (a base model) - a *completion smoke*:
fixed prompts continued greedily. It catches what averages over text do not: a broken template,
leaking control tokens, a model that never stops, loops, produces NaN logits or broken text.

Judged against the base: the same smoke runs on the base model (cached, see ``base_smoke``), and an
artifact fails only for a defect its base does not show on the same turn (``against_base``), so a
tiny model's own rambling on this machine does not fail its artifacts, while an artifact that loops
where its base stops, leaks where its base does not, or lost its template still fails. Without a
base, every defect counts (the absolute verdict)."""

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from quantkit.core.atomic import read_json, write_json
from quantkit.core.smoke_text import CHAT, COMPLETION, PROMPTS, SYSTEM, TITLES, TURNS

NGRAM = 4  # tokens per n-gram for the repetition check

# Defect codes; the text of each is written by ``check_turn``.
EMPTY, NO_STOP, LEAK, REPETITION, UTF8, NAN = "empty", "no_stop", "leak", "repetition", "utf8", "nan"
# Which defects of the base, on the same turn, excuse an artifact's defect (the model's own
# behaviour, not the quantization's):
# - not stopping and looping are one symptom (rambling): a base that does either excuses both, as
#   greedy trajectories of a small model differ between CPUs and between nearby weights;
# - leaked control tokens: a wrong or lost template makes the artifact leak where its base, through
#   its own template, does not; a model that writes its control tokens itself does so in the base too;
# - invalid UTF-8: a broken vocabulary or detokenizer shows in the artifact alone; a byte-level model
#   that emits bytes which do not form a character (a tiny model on the Chinese turn) does it in both;
# - NaN/inf is never excused: an artifact with non-finite logits cannot be used whatever its base does.
EXCUSED_BY = {
    EMPTY: {EMPTY},
    NO_STOP: {NO_STOP, REPETITION},
    REPETITION: {NO_STOP, REPETITION},
    LEAK: {LEAK},
    UTF8: {UTF8},
    NAN: set(),
}
SMOKE_CACHE_VERSION = 1  # bump when the checks or the stored fields change


@dataclass
class SmokeOptions:
    max_tokens: int = 256  # per chat reply; a reply must stop by itself before this
    completion_tokens: int = 64  # per completion; a base model may stop (EOS) or run to this limit
    max_repeat_ratio: float = 0.5  # share of repeated 4-grams above which a reply is degenerate


@dataclass
class SmokeTurn:
    user: str  # the user's message (chat) or the prompt (completion)
    reply: str
    tokens: int
    stopped: bool  # ended with an end-of-turn/EOS token before the token limit
    repeat_ratio: float
    finite: bool
    problems: list[str] = field(default_factory=list)  # readable, one per defect
    defects: list[str] = field(default_factory=list)  # the codes of ``problems`` (EMPTY, NO_STOP, ...)


@dataclass
class SmokeResult:
    passed: bool
    turns: list[SmokeTurn]
    failures: list[str]
    seconds: float
    mode: str = CHAT  # chat | completion
    base: dict | None = None  # the base's smoke (same mode) when judged against it
    excused: list[str] = field(default_factory=list)  # defects the base shows too on the same turn
    notes: list[str] = field(default_factory=list)

    @property
    def title(self) -> str:
        return TITLES[self.mode]

    def transcript(self) -> str:
        return transcript(self.mode, [(t.user, t.reply) for t in self.turns])

    def to_dict(self) -> dict:
        data = asdict(self)
        data["title"] = self.title
        data["against_base"] = self.base is not None
        data["transcript"] = self.transcript()
        return data


def transcript(mode: str, turns: list[tuple[str, str]]) -> str:
    if mode == COMPLETION:
        return "\n".join(f"[prompt] {user}\n[completion] {reply}" for user, reply in turns)
    lines = [f"[system] {SYSTEM}"]
    for user, reply in turns:
        lines += [f"[user] {user}", f"[assistant] {reply}"]
    return "\n".join(lines)


def repeat_ratio(ids: list[int], n: int = NGRAM) -> float:
    """Share of a reply's n-grams that already occurred earlier in it (0 = no repetition)."""
    grams = [tuple(ids[i : i + n]) for i in range(len(ids) - n + 1)]
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


def check_turn(
    engine, user: str, ids: list[int], stopped: bool, finite: bool, options: SmokeOptions, mode: str = CHAT
) -> SmokeTurn:
    """The defects of one reply. In a completion, running to the token limit is no defect: a base
    model continues text rather than ending a turn, so EOS and the limit are both a fine end."""
    text = engine.detokenize(ids)
    turn = SmokeTurn(
        user=user, reply=text.strip(), tokens=len(ids), stopped=stopped, repeat_ratio=repeat_ratio(ids), finite=finite
    )

    def defect(code: str, problem: str) -> None:
        turn.defects.append(code)
        turn.problems.append(problem)

    if not turn.reply:
        defect(EMPTY, "empty reply")
    # A reply cut at the token limit may end inside a multi-byte character: only that tail is excused.
    body = text if stopped else text.rstrip("\ufffd")
    if "\ufffd" in body:
        defect(UTF8, "reply is not valid UTF-8")
    if not stopped and mode == CHAT:
        defect(NO_STOP, f"did not stop within {options.max_tokens} tokens")
    leaked = sorted(tok for tok in engine.special_tokens if tok and tok in text)
    if leaked:
        defect(LEAK, f"template/special tokens leaked: {', '.join(leaked[:5])}")
    if turn.repeat_ratio > options.max_repeat_ratio:
        defect(REPETITION, f"degenerate repetition ({turn.repeat_ratio:.0%} repeated {NGRAM}-grams)")
    if not finite:
        defect(NAN, "NaN/inf logits")
    return turn


def failures_of(turns: list[SmokeTurn], mode: str) -> list[str]:
    word = "prompt" if mode == COMPLETION else "turn"
    return [f"{word} {i + 1}: {p}" for i, t in enumerate(turns) for p in t.problems]


def has_chat_template(engine) -> bool:
    """Whether the engine's model has a chat template (the engines raise InputError without one)."""
    from quantkit.core.errors import InputError

    declared = getattr(engine, "has_chat_template", None)
    if isinstance(declared, bool):
        return declared
    try:
        engine.chat_prompt([{"role": "user", "content": "hi"}])
    except InputError:
        return False
    except Exception:  # a template that fails on this probe is still a template: the smoke chat reports it
        return True
    return True


def smoke_chat(engine, options: SmokeOptions | None = None, on_turn=None) -> SmokeResult:
    """Run the fixed conversation on ``engine``; every turn's reply joins the history."""
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
    failures = failures_of(turns, CHAT)
    return SmokeResult(passed=not failures, turns=turns, failures=failures, seconds=round(time.perf_counter() - started, 2))


def smoke_completion(engine, options: SmokeOptions | None = None, on_turn=None) -> SmokeResult:
    """Continue each fixed prompt greedily (with the tokenizer's own BOS, as a plain completion)."""
    options = options or SmokeOptions()
    started = time.perf_counter()
    turns = []
    for prompt in PROMPTS:
        ids, stopped, finite = greedy_reply(engine, engine.tokenize(prompt, add_special=True), options.completion_tokens)
        turn = check_turn(engine, prompt, ids, stopped, finite, options, mode=COMPLETION)
        turns.append(turn)
        if on_turn:
            on_turn(turn)
    failures = failures_of(turns, COMPLETION)
    return SmokeResult(
        passed=not failures, turns=turns, failures=failures, seconds=round(time.perf_counter() - started, 2), mode=COMPLETION
    )


def smoke(engine, options: SmokeOptions | None = None, on_turn=None) -> SmokeResult:
    """The chat smoke when the model has a chat template, else the completion smoke."""
    run = smoke_chat if has_chat_template(engine) else smoke_completion
    return run(engine, options, on_turn)


def against_base(result: SmokeResult, base: dict | None) -> SmokeResult:
    """Re-judge ``result`` (the artifact's smoke) against ``base`` (the base's ``to_dict()``): a
    defect counts only where the base's reply on the same turn does not show it (``EXCUSED_BY``).
    An artifact that lost the chat template its base has fails; without a base, nothing changes."""
    if base is None:
        return result
    if base.get("mode") != result.mode:
        if base.get("mode") == CHAT:  # the template did not travel into the artifact
            result.failures.insert(0, "the artifact has no chat template but its base has one")
            result.passed = False
        else:
            result.notes.append("the base has no chat template: the artifact's chat is judged on its own")
        return result
    failures, excused = [], []
    word = "prompt" if result.mode == COMPLETION else "turn"
    base_turns = base.get("turns") or []
    for i, turn in enumerate(result.turns):
        base_defects = set(base_turns[i].get("defects", [])) if i < len(base_turns) else set()
        for code, problem in zip(turn.defects, turn.problems):
            line = f"{word} {i + 1}: {problem}"
            (excused if EXCUSED_BY.get(code, set()) & base_defects else failures).append(line)
    result.failures, result.excused, result.passed = failures, excused, not failures
    result.base = base
    return result


def smoke_key(base: Path, engine_name: str, engine_options, options: SmokeOptions) -> str:
    """The cache key of the base's smoke: its weights, engine, device, dtype, the smoke's settings
    and texts (quality's shared key helper, so logits and transcripts are keyed alike)."""
    from quantkit.benchmark.quality import base_key

    return base_key(
        base, engine_name, engine_options, ["smoke", SMOKE_CACHE_VERSION, asdict(options), SYSTEM, TURNS, PROMPTS, NGRAM]
    )


def base_smoke(base: Path | str, options: SmokeOptions | None = None, engine_options=None) -> tuple[dict, bool]:
    """The base model's smoke (``SmokeResult.to_dict()``): cached, or run by loading the base alone
    (then freed). Returns (result, was_cached)."""
    from quantkit.core.paths import cache_dir
    from quantkit.engines import engine_for, load_engine

    options = options or SmokeOptions()
    base = Path(base)
    name = engine_for(base)
    file = cache_dir("base-smoke") / f"{smoke_key(base, name, engine_options, options)}.json"
    if (cached := read_json(file, default=None)) is not None:  # a damaged entry is measured again
        return cached, True
    engine = load_engine(base, engine_options, engine=name)
    try:
        result = smoke(engine, options).to_dict()
    finally:
        engine.close()
        del engine
    write_json(file, result, ensure_ascii=False, indent=None)  # never a half-written cache entry
    return result, False
