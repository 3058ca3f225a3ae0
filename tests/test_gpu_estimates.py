"""The quantize stage's GPU estimate against hand counts from the pinned libraries' sources
(llm-compressor 0.14.0.1: the sequential pipeline onloads one decoder layer at a time and keeps
the layer inputs on the CPU; AWQ caches every sample's parent inputs on the device and holds one
parent's unquantized and quantized outputs; GPTQ holds an n_in x n_in fp32 Hessian per Linear;
lm_head runs on the meta device) and the verification that ends the stage. Each hand count is
written out term by term, in bytes, and must be within 20% of the estimate."""

import json
from pathlib import Path

import pytest

from quantkit.core import estimate
from quantkit.quantization.registry import get_method, make_options

CONFIGS = Path(__file__).parent / "fixtures" / "configs"
GiB = 2**30
CONTEXT = 2**30  # estimate.CUDA_OVERHEAD_BYTES: context, cuBLAS workspace, allocator slack
IDLE_CONTEXT = 2**29  # the quantize process's context while its verification child runs


def config(name: str) -> dict:
    return json.loads((CONFIGS / f"{name}.json").read_text())


def need(name: str, method: str, verify_on: str = "cuda", **settings):
    fp = get_method(method).footprint(make_options(method, settings))
    return estimate.quantize_need(config(name), fp, "cuda", verify_on=verify_on)


def close(estimated: int, hand: int) -> bool:
    return abs(estimated - hand) <= 0.2 * hand


def test_qwen25_7b_awq_calibration_by_hand():
    # hidden 3584, intermediate 18944, 28 heads / 4 KV heads of 128, 128 x 512 tokens, batch 8
    layer = (3584 * 3584 + 2 * 3584 * 512 + 3584 * 3584 + 3 * 3584 * 18944) * 2  # 466 MB, one layer in bf16
    clones = 2 * (2 * 18944 * 3584 * 2)  # gate+up's orig_layer_weights + the grid point's weights: 543 MB
    # self_attn's input + rotary cos/sin, mlp's, down_proj's (o_proj's not: 4 KV heads): 3.46 GB
    cached = 128 * 512 * (3584 + 2 * 128 + 3584 + 18944) * 2
    outputs = 2 * 128 * 512 * 3584 * 2  # fp16_outputs + int_w_outputs of one parent: 0.94 GB
    temps = 4 * 8 * 512 * 18944 * 2  # one batch's MLP-wide temporaries: 0.62 GB
    hand = layer + clones + cached + outputs + temps + CONTEXT  # ~7.1 GB; no lm_head logits (meta device)
    got = need("qwen2.5-7b-instruct", "awq", "cpu", calib_samples=128, calib_seq_len=512).gpu_bytes
    assert close(got, hand), (got / GiB, hand / GiB)
    assert got < 8 * GiB  # the old estimate charged lm_head 3.3 GiB of fp32 logits: 9.4 GiB


def test_qwen25_7b_quantize_stage_is_its_verification_by_hand():
    base = 7_615_487_488 * 2  # the bf16 base on the GPU: 15.2 GB (the dense artifact after it is no larger)
    logits = 256 * 152064 * (2 + 4)  # 256 positions, bf16 logits and their .float() copy
    hand = base + logits + CONTEXT + IDLE_CONTEXT  # ~17.1 GB
    got = need("qwen2.5-7b-instruct", "awq", calib_samples=128, calib_seq_len=512)
    assert close(got.gpu_bytes, hand), (got.gpu_bytes / GiB, hand / GiB)
    assert "verification on the GPU" in got.why


def test_yi_34b_awq_keep_down_proj_by_hand():
    # hidden 7168, intermediate 20480, 56 heads / 8 KV heads of 128, down_proj ignored, 128 x 512
    layer = (2 * 7168 * 7168 + 2 * 7168 * 1024 + 3 * 7168 * 20480) * 2  # 1.12 GB
    clones = 2 * (2 * 20480 * 7168 * 2)  # gate+up: 1.17 GB
    cached = 128 * 512 * (7168 + 2 * 128 + 7168) * 2  # no down_proj (ignored) nor o_proj (8 KV heads): 1.91 GB
    outputs = 2 * 128 * 512 * 7168 * 2  # 1.88 GB
    temps = 4 * 8 * 512 * 20480 * 2  # 0.67 GB
    hand = layer + clones + cached + outputs + temps + CONTEXT  # ~7.8 GB: one 48 GB card is plenty
    settings = {"calib_samples": 128, "calib_seq_len": 512, "ignore": ["re:.*down_proj"], "group_size": 128}
    alone = need("yi-34b-chat", "awq", "cpu", **settings)
    assert close(alone.gpu_bytes, hand), (alone.gpu_bytes / GiB, hand / GiB)
    # With verification on the GPU, the stage holds the bf16 base: one 80 GB card.
    stage_hand = 34_388_917_248 * 2 + 256 * 64000 * 6 + CONTEXT + IDLE_CONTEXT  # ~70.5 GB
    stage = need("yi-34b-chat", "awq", **settings)
    assert close(stage.gpu_bytes, stage_hand) and 48 * GiB < stage.gpu_bytes < 80 * GiB
    assert stage.ram_bytes == alone.ram_bytes  # verification on the CPU needs no more than the bf16 model in RAM


def test_llama31_8b_gptq_hessians_by_hand():
    # hidden 4096, intermediate 14336, 32 heads / 8 KV heads of 128, 128 x 512 tokens, batch 1
    layer = (2 * 4096 * 4096 + 2 * 4096 * 1024 + 3 * 4096 * 14336) * 2  # 436 MB
    hessians = (6 * 4096 * 4096 + 14336 * 14336) * 4  # q, k, v, o, gate, up, down: 1.22 GB fp32
    compress = 2 * 14336 * 14336 * 4  # down_proj's normalized and stacked copies (prepare_batch): 1.64 GB
    weights_fp32 = 2 * (2 * 14336 * 4096 * 4)  # gate+up stacked in fp32 and their quantized copy: 0.94 GB
    temps = 4 * 512 * 14336 * 2 + 512 * 14336 * 4  # one sample's temporaries and fp32 Hessian input
    hand = layer + hessians + compress + weights_fp32 + temps + CONTEXT  # ~5.4 GB
    for method in ("gptq", "w8a8"):
        got = need("llama-3.1-8b-instruct", method, "cpu", calib_samples=128, calib_seq_len=512).gpu_bytes
        assert close(got, hand), (method, got / GiB, hand / GiB)


@pytest.mark.parametrize("quantizer, more", [("rtn", False), ("gptq", True)])
def test_awq_with_the_gptq_quantizer_adds_a_hessian_pass(quantizer, more):
    """The "independent" pipeline runs AWQ's pass, then GPTQ's: the peak is the larger one."""
    from quantkit.core.estimate_gpu import calibration_gpu_parts

    fp = get_method("awq").footprint(make_options("awq", {"quantizer": quantizer, "calib_samples": 8, "calib_seq_len": 128}))
    parts = calibration_gpu_parts(estimate.shape(config("qwen2.5-7b-instruct")), fp)
    assert ("gptq" in parts) is more and "awq" in parts


def test_fp8_counts_the_whole_checkpoint_in_ram():
    """Data-free FP8 loads the whole bf16 model on the CPU (not quantized at load as bitsandbytes)."""
    qwen = config("qwen2.5-7b-instruct")
    bf16 = estimate.estimate_params(qwen) * 2
    cpu = estimate.quantize_need(qwen, get_method("fp8").footprint(make_options("fp8", {})), "cpu")
    gpu = need("qwen2.5-7b-instruct", "fp8", "cpu")
    assert bf16 < cpu.ram_bytes < 1.3 * bf16 and bf16 < gpu.ram_bytes < 1.3 * bf16
    assert gpu.gpu_bytes < 3 * GiB  # one module at a time on the GPU


def tensor_bytes(value) -> int:
    """Bytes of the tensors in an IntermediatesCache entry (nested IntermediateValues, tuples)."""
    import torch

    if isinstance(value, torch.Tensor):
        return value.nbytes
    inner = getattr(value, "value", None)
    if inner is not None and inner is not value:
        return tensor_bytes(inner)
    if isinstance(value, (tuple, list)):
        return sum(tensor_bytes(v) for v in value)
    if isinstance(value, dict):
        return sum(tensor_bytes(v) for v in value.values())
    return 0


def test_awq_cached_inputs_and_outputs_match_llm_compressor_on_the_cpu(tiny_llama, tmp_path, monkeypatch):
    """The two activation terms of the AWQ pass, read from llm-compressor's own AWQModifier on a
    tiny Llama (the same code path a GPU runs; fp32 on the CPU, so 4 bytes where a GPU has 2):
    every sample's parent inputs when smoothing starts, and one parent's outputs."""
    from llmcompressor.modifiers.transform.awq import AWQModifier

    from quantkit.core.estimate_gpu import awq_cached_width

    monkeypatch.setenv("QUANTKIT_HOME", str(tmp_path / "home"))  # no cached calibration to reuse
    seen = {"cached": 0, "outputs": 0}
    smooth, run = AWQModifier._apply_smoothing, AWQModifier._run_samples

    def apply_smoothing(self, model):
        cached = sum(tensor_bytes(b) for c in self._parent_args_cache.values() for b in c.batch_intermediates)
        seen["cached"] = max(seen["cached"], cached)
        return smooth(self, model)

    def run_samples(self, module):
        outputs = run(self, module)
        seen["outputs"] = max(seen["outputs"], sum(o.nbytes for o in outputs))
        return outputs

    monkeypatch.setattr(AWQModifier, "_apply_smoothing", apply_smoothing)
    monkeypatch.setattr(AWQModifier, "_run_samples", run_samples)
    samples, seq = 8, 64
    options = make_options("awq", {"calib_samples": samples, "calib_seq_len": seq, "group_size": 64})
    out = tmp_path / "awq"
    out.mkdir()
    get_method("awq").quantize(tiny_llama, out, options)
    s = estimate.shape(json.loads((tiny_llama / "config.json").read_text()))
    # 8 x 64 x (128 + 2 x 32 + 128 + 256) x 4 bytes: hidden states + cos/sin, MLP, down_proj inputs
    # (o_proj's not: 2 KV heads of 32 against 128 wide, llm-compressor skips that mapping)
    cached_hand = samples * seq * awq_cached_width(s) * 4
    outputs_hand = samples * seq * s["hidden"] * 4
    print("AWQ on a tiny Llama:", seen, "estimated:", cached_hand, outputs_hand)
    assert close(seen["cached"], cached_hand), (seen["cached"], cached_hand)
    assert close(seen["outputs"], outputs_hand), (seen["outputs"], outputs_hand)


def test_gptq_hessians_match_llm_compressor_on_the_cpu(tiny_llama, tmp_path, monkeypatch):
    """GPTQ's Hessians of one layer as GPTQModifier holds them when it compresses: every
    quantized Linear's n_in x n_in in fp32 (tiny Llama: 6 x 128^2 + 256^2 values)."""
    from llmcompressor.modifiers.gptq import GPTQModifier

    from quantkit.core.estimate_gpu import FP32, layer_linears

    seen = []
    compress = GPTQModifier.compress_modules

    def compress_modules(self):
        seen.append(sum(h.nbytes for h in self._hessians.values()))
        return compress(self)

    monkeypatch.setattr(GPTQModifier, "compress_modules", compress_modules)
    options = make_options("gptq", {"calib_samples": 4, "calib_seq_len": 32, "group_size": 64})
    out = tmp_path / "gptq"
    out.mkdir()
    get_method("gptq").quantize(tiny_llama, out, options)
    s = estimate.shape(json.loads((tiny_llama / "config.json").read_text()))
    hand = (6 * 128 * 128 + 256 * 256) * 4
    assert sum(n_in * n_in * FP32 for n_in, _ in layer_linears(s).values()) == hand
    assert seen and max(seen) == hand, (seen, hand)
