"""The smoke chat: a good artifact passes in its own runtime; a wrong chat template fails it
(the model neither stops nor keeps the template's markers out of its replies)."""

import os
import shutil

import numpy as np
import pytest

from quantkit.benchmark.smoke import TURNS, SmokeOptions, repeat_ratio, smoke_chat
from quantkit.engines import EngineOptions, load_engine
from quantkit.hub.bundled import bundled_gguf

# A Llama-2 style template on a ChatML model: the turns it writes are not the ones it was trained on.
WRONG_TEMPLATE = "{% for m in messages %}[INST] {{ m['content'] }} [/INST]\n{% endfor %}"


def test_repeat_ratio():
    assert repeat_ratio(list(range(40))) == 0.0
    assert repeat_ratio([1, 2, 3, 4] * 10) > 0.8
    assert repeat_ratio([1, 2]) == 0.0


def test_conversation_has_the_required_turns():
    assert len(TURNS) == 3
    assert any("```python" in t for t in TURNS) and any("你好" in t for t in TURNS)


@pytest.mark.slow
def test_good_gguf_passes_with_transcript():
    engine = load_engine(bundled_gguf("bundled:smollm2-135m-instruct"), EngineOptions(threads=1))
    try:
        seen = []
        result = smoke_chat(engine, SmokeOptions(max_tokens=160), on_turn=seen.append)
    finally:
        engine.close()
    assert result.passed, result.failures
    assert len(seen) == 3 and all(t.stopped and t.reply and t.finite for t in result.turns)
    transcript = result.to_dict()["transcript"]
    assert transcript.count("[user]") == 3 and "你好" in transcript and "def average" in transcript
    assert "average" in result.turns[1].reply  # the follow-up used the previous answer


@pytest.mark.parametrize("reply, problem", [("", "empty reply"), ("ok <|im_start|>user", "leaked")])
def test_turn_checks(reply, problem):
    from quantkit.benchmark.smoke import check_turn

    class FakeTokens:  # only the text side of the engine is needed here
        special_tokens = {"<|im_start|>"}

        def detokenize(self, ids):
            return reply

    turn = check_turn(FakeTokens(), "hi", [1, 2], stopped=True, finite=True, options=SmokeOptions())
    assert any(problem in p for p in turn.problems)


# --- the checks on a scripted engine (pure logic: no model needed) ------------------------------

VOCAB, EOS, BAD_BYTE = 512, 1, 7


class ScriptedEngine:
    """An engine whose greedy choice follows a script: the token ids of each reply in order, then
    EOS. ``inf_turns`` get an inf logit (the chosen token's), ``chat=False`` has no chat template."""

    def __init__(self, replies, chat=True, inf_turns=()):
        self.replies, self.chat, self.inf_turns = list(replies), chat, set(inf_turns)
        self.eos_ids, self.special_tokens = {EOS}, {"<|im_start|>"}
        self.turn, self.pos, self.prompts = -1, 0, []

    def chat_prompt(self, messages):
        from quantkit.core.errors import InputError

        if not self.chat:
            raise InputError("this fake has no chat template")
        return [2]

    def tokenize(self, text, add_special=False):
        self.prompts.append(text)
        return [2]

    def reset(self):
        self.turn, self.pos = self.turn + 1, 0

    def forward(self, ids):
        reply = self.replies[self.turn % len(self.replies)]
        token = reply[self.pos] if self.pos < len(reply) else EOS
        self.pos += 1
        logits = np.zeros(VOCAB, dtype=np.float32)
        logits[token] = np.inf if self.turn in self.inf_turns else 1.0
        return logits

    def detokenize(self, ids):
        return "".join({BAD_BYTE: "\ufffd", 9: "<|im_start|>"}.get(i, f" w{i}") for i in ids)


GOOD = [3, 4, 5]
NEVER_STOPS = list(range(10, 400))  # distinct tokens, longer than any limit
LOOP = [3, 4, 5, 6] * 20  # stops, but 95% of its 4-grams are repeats


def run_chat(*replies, **kw):
    return smoke_chat(ScriptedEngine(replies, **kw), SmokeOptions(max_tokens=256))


def test_a_clean_conversation_passes():
    result = run_chat(GOOD)
    assert result.passed and result.failures == [] and result.mode == "chat"
    assert all(t.stopped and t.finite and t.tokens == 3 for t in result.turns)


def test_never_stopping_reply_fails():
    result = run_chat(GOOD, NEVER_STOPS, GOOD)
    assert not result.passed and result.failures == ["turn 2: did not stop within 256 tokens"]
    assert result.turns[1].tokens == 256 and not result.turns[1].stopped and result.turns[1].defects == ["no_stop"]


def test_degenerate_repetition_fails():
    result = run_chat(LOOP, GOOD, GOOD)
    assert result.turns[0].stopped and result.turns[0].repeat_ratio > 0.9
    assert result.failures == ["turn 1: degenerate repetition (95% repeated 4-grams)"]


def test_nan_or_inf_logits_fail():
    result = run_chat(GOOD, inf_turns={2})
    assert [t.finite for t in result.turns] == [True, True, False]
    assert result.failures == ["turn 3: NaN/inf logits"]


def test_invalid_utf8_fails_but_a_cut_off_tail_does_not():
    result = run_chat([3, BAD_BYTE, 4], GOOD, GOOD)
    assert result.failures == ["turn 1: reply is not valid UTF-8"]
    cut = run_chat(NEVER_STOPS[:255] + [BAD_BYTE], GOOD, GOOD)  # the limit cut a multi-byte character
    assert cut.failures == ["turn 1: did not stop within 256 tokens"]


def test_completion_smoke_without_a_chat_template():
    from quantkit.benchmark.smoke import PROMPTS, smoke

    engine = ScriptedEngine([NEVER_STOPS, GOOD, LOOP], chat=False)
    result = smoke(engine, SmokeOptions(completion_tokens=32))
    assert result.mode == "completion" and result.title == "completion smoke (no chat template)"
    assert engine.prompts == list(PROMPTS) and [t.user for t in result.turns] == list(PROMPTS)
    # Running to the token limit is a fine end for a base model; looping is not.
    assert result.turns[0].tokens == 32 and not result.turns[0].stopped
    assert result.failures == ["prompt 3: degenerate repetition (86% repeated 4-grams)"]
    data = result.to_dict()
    assert data["transcript"].startswith(f"[prompt] {PROMPTS[0]}\n[completion] w10") and "[assistant]" not in data["transcript"]


def test_against_the_base_counts_only_what_the_base_does_not_show():
    from quantkit.benchmark.smoke import against_base

    base = run_chat(GOOD, NEVER_STOPS, [3, 9]).to_dict()  # rambles on turn 2, leaks on turn 3
    same = against_base(run_chat(GOOD, LOOP, [3, 9]), base)  # loops where the base ran on: one symptom
    assert same.passed and same.failures == [] and same.base is base
    assert same.excused == [
        "turn 2: degenerate repetition (95% repeated 4-grams)",
        "turn 3: template/special tokens leaked: <|im_start|>",
    ]
    other_turn = against_base(run_chat(NEVER_STOPS, GOOD, GOOD), base)  # the base stopped on turn 1
    assert not other_turn.passed and other_turn.failures == ["turn 1: did not stop within 256 tokens"]
    # NaN/inf is never excused, even where the base has it too.
    nan_base = run_chat(GOOD, inf_turns={0}).to_dict()
    assert against_base(run_chat(GOOD, inf_turns={0}), nan_base).failures == ["turn 1: NaN/inf logits"]
    assert against_base(run_chat(NEVER_STOPS), None).failures  # no base: the absolute verdict


def test_an_artifact_that_lost_its_chat_template_fails():
    from quantkit.benchmark.smoke import against_base, smoke

    base = run_chat(GOOD).to_dict()
    result = against_base(smoke(ScriptedEngine([GOOD], chat=False)), base)
    assert not result.passed and result.failures == ["the artifact has no chat template but its base has one"]
    # A template the base lacks: nothing to compare with, so the chat is judged on its own.
    own = against_base(run_chat(NEVER_STOPS, GOOD, GOOD), smoke(ScriptedEngine([GOOD], chat=False)).to_dict())
    assert own.failures == ["turn 1: did not stop within 256 tokens"] and "no chat template" in own.notes[0]


def test_base_smoke_is_cached_by_weights_and_settings(tmp_path, monkeypatch):
    import quantkit.engines
    from quantkit.benchmark.smoke import base_smoke

    monkeypatch.setenv("QUANTKIT_HOME", str(tmp_path / "home"))
    base = tmp_path / "base"
    base.mkdir()
    (base / "config.json").write_text("{}")
    (base / "model.safetensors").write_bytes(b"weights")
    loads = []

    def fake_load(path, options=None, engine=None):
        loads.append(path)
        return type("Closable", (ScriptedEngine,), {"close": lambda self: loads.append("closed")})([GOOD])

    monkeypatch.setattr(quantkit.engines, "load_engine", fake_load)
    first, cached = base_smoke(base, SmokeOptions(max_tokens=16))
    assert not cached and first["passed"] and first["mode"] == "chat" and loads == [base, "closed"]
    again, cached = base_smoke(base, SmokeOptions(max_tokens=16))
    assert cached and again == first and len(loads) == 2  # from the cache: the base is not loaded
    assert not base_smoke(base, SmokeOptions(max_tokens=17))[1]  # other settings, another entry
    os.utime(base / "model.safetensors", ns=(1, 1))
    assert not base_smoke(base, SmokeOptions(max_tokens=16))[1]  # other weights, another entry
    assert len(loads) == 6 and not list((tmp_path / "home").rglob(".*.json"))  # no partial files left


@pytest.mark.slow
def test_wrong_chat_template_fails_alone_and_against_the_base(smollm2, tmp_path, monkeypatch):
    """A Llama-2 template on a ChatML model fails on its own and judged against the base's replies
    (through the base's own, right template)."""
    from quantkit.benchmark.smoke import against_base, base_smoke

    monkeypatch.setenv("QUANTKIT_HOME", str(tmp_path / "home"))
    broken = tmp_path / "wrong-template"
    broken.mkdir()
    for file in smollm2.iterdir():
        if file.suffix == ".safetensors":
            os.symlink(file, broken / file.name)
        elif file.name != "chat_template.jinja":
            shutil.copy(file, broken / file.name)
    (broken / "chat_template.jinja").write_text(WRONG_TEMPLATE)
    settings = SmokeOptions(max_tokens=40)
    base, _ = base_smoke(smollm2, settings, EngineOptions(threads=1))
    engine = load_engine(broken, EngineOptions(threads=1))
    try:
        alone = smoke_chat(engine, settings)
    finally:
        engine.close()
    assert not alone.passed
    assert any("did not stop" in f or "leaked" in f for f in alone.failures), alone.failures
    result = against_base(alone, base)
    assert result.base is base and not result.passed, (result.failures, result.excused)
    assert any("did not stop" in f or "leaked" in f for f in result.failures), result.failures


def test_gates_name_the_completion_smoke():
    from quantkit.benchmark.gates import check, gates_for
    from quantkit.benchmark.smoke import smoke

    failed = smoke_chat(ScriptedEngine([NEVER_STOPS]), SmokeOptions(max_tokens=8)).to_dict()
    assert check(gates_for(4), failed, None)[0] == "smoke: turn 1: did not stop within 8 tokens"
    looping = smoke(ScriptedEngine([LOOP], chat=False), SmokeOptions(completion_tokens=32)).to_dict()
    assert check(gates_for(4), looping, None)[0] == "completion smoke: prompt 1: degenerate repetition (86% repeated 4-grams)"
