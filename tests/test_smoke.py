"""The smoke chat: a good artifact passes in its own runtime; a wrong chat template fails it
(the model neither stops nor keeps the template's markers out of its replies)."""

import os
import shutil

import pytest

from quantkit.bundled import bundled_gguf
from quantkit.engines import EngineOptions, load_engine
from quantkit.smoke import TURNS, SmokeOptions, repeat_ratio, smoke_chat

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


@pytest.mark.slow
def test_wrong_chat_template_fails(smollm2, tmp_path):
    broken = tmp_path / "wrong-template"
    broken.mkdir()
    for file in smollm2.iterdir():
        if file.suffix == ".safetensors":
            os.symlink(file, broken / file.name)
        elif file.name != "chat_template.jinja":
            shutil.copy(file, broken / file.name)
    (broken / "chat_template.jinja").write_text(WRONG_TEMPLATE)
    engine = load_engine(broken, EngineOptions(threads=1))
    try:
        result = smoke_chat(engine, SmokeOptions(max_tokens=48))
    finally:
        engine.close()
    assert not result.passed
    assert any("did not stop" in f or "leaked" in f for f in result.failures), result.failures


@pytest.mark.parametrize("reply, problem", [("", "empty reply"), ("ok <|im_start|>user", "leaked")])
def test_turn_checks(reply, problem):
    from quantkit.smoke import check_turn

    class FakeTokens:  # only the text side of the engine is needed here
        special_tokens = {"<|im_start|>"}

        def detokenize(self, ids):
            return reply

    turn = check_turn(FakeTokens(), "hi", [1, 2], stopped=True, finite=True, options=SmokeOptions())
    assert any(problem in p for p in turn.problems)
