"""Verification frees the quantize stage's model first and loads each side where it fits: the
GPU only when the base (or the artifact) fits its free memory, else the CPU (GPU faked)."""

import json
import os
import weakref
from pathlib import Path

import pytest

from quantkit.core import memory
from quantkit.engines import ENGINES
from quantkit.quantization import verify, verify_place
from quantkit.quantization.base import MethodResult

GiB = 2**30
CONFIG = json.loads((Path(__file__).parent / "fixtures/configs/llama-3.1-8b-instruct.json").read_text())


def folder(path, weights_gib: float, quant: str | None = None):
    """A model folder whose weights file has the size of a real one (sparse: no disk used)."""
    path.mkdir()
    config = dict(CONFIG, **({"quantization_config": {"quant_method": quant}} if quant else {}))
    (path / "config.json").write_text(json.dumps(config))
    with open(path / "model.safetensors", "wb") as fh:
        os.truncate(fh.fileno(), int(weights_gib * GiB))
    return path


@pytest.fixture
def gpu_free(monkeypatch):
    def install(free_gib: float):
        reading = {"free": int(free_gib * GiB), "total": 80 * GiB, "used": 0, "source": "nvml"}
        monkeypatch.setattr(memory, "device_memory", lambda create_context=False: reading)

    return install


def test_each_side_goes_to_the_gpu_only_where_it_fits(tmp_path, gpu_free):
    base = folder(tmp_path / "base", 15)  # an 8B in bf16
    nf4 = folder(tmp_path / "nf4", 5.5, "bitsandbytes")
    awq = folder(tmp_path / "awq", 5.4, "compressed-tensors")  # dense bf16 (15 GiB) once decompressed
    gpu_free(40)
    assert verify_place.placement(nf4, base, False, "cuda") == {"base": "cuda", "artifact": "cuda"}
    gpu_free(12)  # a 12 GiB card: the bf16 base verifies on the CPU, the NF4 artifact on the GPU
    assert verify_place.placement(nf4, base, False, "cuda") == {"base": "cpu", "artifact": "cuda"}
    assert verify_place.placement(awq, base, False, "cuda") == {"base": "cpu", "artifact": "cpu"}
    assert verify_place.placement(tmp_path / "x.gguf", base, ENGINES["llama.cpp"].verify.on_cpu, "cuda")["artifact"] == "cpu"
    assert verify_place.placement(nf4, base, False, "cpu") == {"base": "cpu", "artifact": "cpu"}


def test_verify_artifact_frees_first_and_passes_the_placement(tmp_path, gpu_free, monkeypatch):
    base = folder(tmp_path / "base", 15)
    art = folder(tmp_path / "nf4", 5.5, "bitsandbytes")
    gpu_free(12)
    order, specs = [], []
    monkeypatch.setattr(verify_place, "release_quantize_memory", lambda: order.append("release"))

    def runtime(spec):
        order.append("child")
        specs.append(spec)
        row = {"tokenizer_parity": True, "finite": True, "top1": 0.9, "tokens": 255, "kld_mean": 0.01, "seconds": 1.0}
        return {"results": {"nf4": row}, "base_s": 1.0, "base_cached": False, "seconds": 2.0}

    monkeypatch.setattr(verify, "run_runtime", runtime)
    result = MethodResult("bitsandbytes", "transformers", {"bits": 4, "device": "cuda"})
    record = verify.verify_artifact(art, base, "nf4", result)
    assert order == ["release", "child"]
    assert specs[0]["base_device"] == "cpu" and specs[0]["artifact_device"] == "cuda"
    assert record["devices"] == {"base": "cpu", "artifact": "cuda"}
    assert specs[0]["cache"] == str(verify.base_cache(base, "cpu"))  # the base's side is keyed by where it ran


def test_verify_runtime_reads_each_side_device():
    import importlib.util

    spec = importlib.util.spec_from_file_location("verify_runtime", verify.SCRIPT)
    runtime = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(runtime)
    both = {"device": "cuda", "base_device": "cpu", "artifact_device": "cuda"}
    assert runtime.side_device(both, "base") == "cpu" and runtime.side_device(both, "artifact") == "cuda"
    assert runtime.side_device({"device": "cuda"}, "base") == "cuda"  # an older spec: one device


def test_bnb_quantize_frees_its_model_before_returning(tiny_llama, tmp_path, monkeypatch):
    """bitsandbytes' 4-bit weights reference their modules: without an explicit free the model
    outlives quantize() until a cyclic gc, beside the base the verification loads next."""
    import gc

    import transformers

    from quantkit.quantization.registry import get_method, make_options

    refs = []
    original = transformers.PreTrainedModel.from_pretrained.__func__

    def tracked(cls, *args, **kwargs):  # every model class's load (the Auto class's and a direct one)
        model = original(cls, *args, **kwargs)
        refs.extend(weakref.ref(m) for m in model.modules() if type(m).__name__ == "Linear4bit")
        return model

    monkeypatch.setattr(transformers.PreTrainedModel, "from_pretrained", classmethod(tracked))
    gc.disable()  # only the method's own free may collect it
    try:
        out = tmp_path / "nf4"
        out.mkdir()
        get_method("nf4").quantize(tiny_llama, out, make_options("nf4", {}))
        assert refs and all(ref() is None for ref in refs)  # each layer is in a cycle with its weight
    finally:
        gc.enable()
