import json

import pytest

from quantkit.benchmark.report import fill_card
from quantkit.core.card import write_model_card
from quantkit.core.errors import IntegrityError
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
