"""The 16-bit dtype asked for the unquantized tensors is the one saved, also after an offloaded
run. On a GPU, llm-compressor's pipelines leave the model offloaded (compressed-tensors 0.19's
OffloadCache): every access hands out a fresh device copy, so ``model.to(dtype)`` cast copies and
dropped them. The CPU hands out the stored tensor itself; these tests make it hand out copies, as
a GPU does, to check the cast on the CPU."""

import json
import struct

import pytest


@pytest.fixture
def onload_copies(monkeypatch):
    """compressed-tensors' CPU cache onloads to "cpu" without a copy; a GPU's onload is a copy."""
    from compressed_tensors.offload.cache.cpu import CPUCache

    original = CPUCache.onload
    monkeypatch.setattr(CPUCache, "onload", lambda self, t: None if t is None else original(self, t).clone())


def offloaded_linear():
    import torch
    from compressed_tensors.offload import set_onload_device

    model = torch.nn.Sequential(torch.nn.Linear(8, 8))
    set_onload_device(model, "cpu")
    return model


def stored_dtype(model):
    from compressed_tensors.offload import disable_onloading

    with disable_onloading():
        return model[0].weight.dtype


def test_a_plain_cast_of_an_offloaded_model_is_lost_and_cast_for_saving_keeps_it(onload_copies):
    import torch

    from quantkit.quantization.llmc import cast_for_saving

    plain = offloaded_linear()
    plain.to(torch.float16)
    assert stored_dtype(plain) == torch.float32  # the issue: the cast went to a temporary copy
    model = offloaded_linear()
    cast_for_saving(model, torch.float16)
    assert stored_dtype(model) == torch.float16 and model[0].weight.dtype == torch.float16


def safetensors_dtypes(folder) -> dict[str, str]:
    dtypes = {}
    for path in folder.glob("*.safetensors"):
        with open(path, "rb") as fh:
            (size,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(size))
        dtypes.update({k: v["dtype"] for k, v in header.items() if k != "__metadata__"})
    return dtypes


def test_fp16_checkpoint_stays_fp16_after_an_offloaded_run(tiny_llama, tmp_path, onload_copies):
    """FP8 (data-free, the quickest llm-compressor path; gptq/w8a8/awq save through the same
    cast) asked for float16: the saved unquantized tensors are F16, as the manifest says."""
    from quantkit.quantization.quantize import quantize
    from quantkit.quantization.registry import make_options

    out = quantize(tiny_llama, "fp8", tmp_path / "fp8", make_options("fp8", {"dtype": "float16"}))
    manifest = json.loads((out / "quantkit.json").read_text())
    assert manifest["settings"]["save_dtype"] == "float16"
    dtypes = safetensors_dtypes(out)
    unquantized = {k: v for k, v in dtypes.items() if not k.endswith((".weight", "weight_scale")) or "proj" not in k}
    assert dtypes["lm_head.weight"] == "F16" and dtypes["model.embed_tokens.weight"] == "F16"
    assert dtypes["model.layers.0.self_attn.q_proj.weight_scale"] == "F16"
    assert {v for k, v in unquantized.items() if "norm" in k} == {"F16"}
    assert dtypes["model.layers.0.self_attn.q_proj.weight"] == "F8_E4M3"
