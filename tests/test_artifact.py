import json

import pytest

from quantkit.benchmark.report import fill_card
from quantkit.core.card import write_model_card
from quantkit.core.errors import InputError, IntegrityError
from quantkit.core.manifest import MANIFEST, read_manifest, verify, write_manifest


def test_manifest_hashes_and_verify(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"abc" * 100)
    manifest = write_manifest(tmp_path, {"method": "nf4", "source": {"repo_id": "org/model"}})
    assert manifest["files"][0]["path"] == "model.safetensors"
    assert read_manifest(tmp_path)["method"] == "nf4"
    verify(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"abd" * 100)
    with pytest.raises(IntegrityError, match="model.safetensors"):
        verify(tmp_path)


def test_model_card_header_and_results(tmp_path):
    manifest = write_manifest(tmp_path, {"method": "awq", "source": {"repo_id": "org/model"}, "settings": {"bits": 4}})
    write_model_card(tmp_path, manifest, "```python\nAutoModelForCausalLM.from_pretrained('.')\n```")
    card = (tmp_path / "README.md").read_text()
    assert card.startswith("---\nbase_model: org/model\n")
    assert "quantized_by: quantkit" in card
    fill_card(tmp_path, [{"engine": "transformers", "bits": 4, "decode_tokens_per_s": 42.25, "prefill_tokens_per_s": 812.5}])
    card = (tmp_path / "README.md").read_text()
    assert "42.2" in card and "812" in card and "Not benchmarked yet" not in card
    assert json.loads((tmp_path / MANIFEST).read_text())["method"] == "awq"


def test_resolve_artifact_is_the_one_rule_for_what_runs(tmp_path):
    """bench, chat, serve and qk.load take the same things: a file as it is, else a model folder."""
    from quantkit.hub.model_ref import resolve_artifact

    gguf = tmp_path / "model.Q4_K_M.gguf"
    gguf.write_bytes(b"GGUF")
    assert resolve_artifact(str(gguf)) == gguf.resolve()
    assert resolve_artifact(tmp_path) == tmp_path.resolve()
    with pytest.raises(InputError, match="neither an existing folder nor a hub repo id"):
        resolve_artifact(tmp_path / "missing")


def test_read_json_names_a_damaged_file_or_gives_the_default(tmp_path):
    from quantkit.core.atomic import read_json, write_json

    good = write_json(tmp_path / "good.json", {"a": 1})
    bad = tmp_path / "bad.json"
    bad.write_text('{"a": ')
    assert read_json(good) == {"a": 1} and read_json(bad, default=None) is None
    assert read_json(tmp_path / "missing.json", default={}) == {}
    with pytest.raises(InputError, match="bad.json is not valid JSON") as info:
        read_json(bad, hint="run it again")
    assert info.value.hint == "run it again"
    with pytest.raises(FileNotFoundError):
        read_json(tmp_path / "missing.json")
