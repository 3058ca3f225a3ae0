"""Calibration data: the shipped set, .txt/.jsonl files, chat-formatted samples, the hash."""

import json

import pytest

from quantkit.core.errors import InputError
from quantkit.quantization import calibration


@pytest.fixture(scope="module")
def tokenizer(tiny_llama):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_llama)


def test_shipped_set_is_varied_and_small():
    text = calibration.default_text()
    paragraphs = calibration.split_paragraphs(text)
    assert len(text.encode()) < 300_000
    assert len(paragraphs) >= 200
    assert any("def " in p for p in paragraphs) and any("SELECT" in p for p in paragraphs)  # code too
    assert len(set(paragraphs)) == len(paragraphs)


def test_default_samples_reach_seq_len_and_half_are_chat(tokenizer):
    calib = calibration.build(tokenizer, None, samples=8, seq_len=64)
    assert len(calib.samples) == 8
    assert calib.chat_samples == 4
    assert sum("<|im_start|>assistant" in s for s in calib.samples) == 4  # the model's own template
    assert all(len(tokenizer(s)["input_ids"]) >= 64 for s in calib.samples)
    record = calib.record()
    assert record["source"] == calibration.DEFAULT_NAME and record["samples"] == 8 and record["seq_len"] == 64
    assert len(record["sha256"]) == 64 and len(record["source_sha256"]) == 64


def test_hash_is_deterministic_and_tracks_the_data(tokenizer):
    a = calibration.build(tokenizer, None, samples=4, seq_len=32)
    b = calibration.build(tokenizer, None, samples=4, seq_len=32)
    c = calibration.build(tokenizer, None, samples=5, seq_len=32)
    assert a.sha256 == b.sha256 and a.samples == b.samples
    assert c.sha256 != a.sha256


def test_txt_file_paragraphs(tmp_path, tokenizer):
    path = tmp_path / "calib.txt"
    path.write_text("First paragraph about rivers.\n\nSecond one, about mountains.\n\n\nThird: deserts.\n")
    calib = calibration.build(tokenizer, path, samples=2, seq_len=8, chat=False)
    joined = "\n".join(calib.samples)
    assert "rivers" in joined and calib.chat_samples == 0
    assert calib.source == str(path)


def test_jsonl_text_and_messages(tmp_path, tokenizer):
    path = tmp_path / "calib.jsonl"
    rows = [
        {"text": "A plain record about the sea and ships."},
        {"messages": [{"role": "user", "content": "Hi there"}, {"role": "assistant", "content": "Hello, how can I help?"}]},
        "a bare string record works too",
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    calib = calibration.build(tokenizer, path, samples=3, seq_len=8)
    assert calib.chat_samples == 1
    assert any("Hello, how can I help?" in s and "<|im_start|>" in s for s in calib.samples)
    assert any("the sea and ships" in s for s in calib.samples)


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("missing.txt", None, "does not exist"),
        ("empty.txt", "\n\n  \n", "holds no text"),
        ("bad.jsonl", '{"text": "ok"}\n{"text": \n', "bad.jsonl:2 is not valid JSON"),
        ("wrong.jsonl", '{"content": "x"}\n', 'neither a "text" string nor a "messages" list'),
        ("data.csv", "a,b\n", "neither .txt nor .jsonl"),
    ],
)
def test_bad_files_fail_with_one_clear_line(tmp_path, name, content, message):
    path = tmp_path / name
    if content is not None:
        path.write_text(content)
    with pytest.raises(InputError) as err:
        calibration.read_records(path)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_chat_records_need_a_chat_template(tmp_path, tokenizer):
    path = tmp_path / "chat.jsonl"
    path.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"}]}) + "\n")
    saved = tokenizer.chat_template
    tokenizer.chat_template = None
    try:
        with pytest.raises(InputError, match="no chat template"):
            calibration.build(tokenizer, path, samples=1, seq_len=8)
    finally:
        tokenizer.chat_template = saved
