"""What the quantize stage really puts on a GPU, counted from the pinned libraries' sources
(llm-compressor 0.14.0.1, compressed-tensors 0.19.0, transformers 5.17), and the verification
that follows it in a child process.

llm-compressor's sequential pipeline (``pipelines/sequential/pipeline.py``) keeps the model on
the CPU and onloads one subgraph at a time to ``cuda:0`` (the embedding alone, then one decoder
layer each), offloading the layer inputs to the CPU between layers. ``oneshot``'s default
"independent" pipeline runs each modifier in its own pass, so the peak is the largest pass:

- AWQ (``modifiers/transform/awq/base.py``) caches every sample's inputs of each mapping's parent
  on the device (``offload_device`` None for dense models), then holds the parent's unquantized
  outputs and, per grid point, its quantized ones, beside a clone of the balance layers' weights.
- GPTQ (``modifiers/gptq``; the gptq method, w8a8 and awq with quantizer=gptq) accumulates one
  n_in x n_in fp32 Hessian per Linear of the layer, then compresses them: ``prepare_batch``
  normalizes and stacks the largest beside itself (two more copies) and copies the weights to fp32.
- lm_head runs on the meta device (``utils/helpers.disable_lm_head``): no logits are computed.
"""

import re

# The CUDA context, cuBLAS workspace and allocator slack a process pays on its first kernel.
CUDA_OVERHEAD_BYTES = 1 * 2**30
TEMPORARIES = 4  # live activation-sized temporaries of one block's forward (inputs, outputs, MLP)
# The CUDA context of a process that ran kernels and no longer holds tensors (the quantize
# process while its verification child runs).
CUDA_CONTEXT_BYTES = 512 * 2**20
VERIFY_TOKENS = 256  # quantkit.quantization.verify.TOKENS: positions of logits the child computes
BF16 = 2
FP32 = 4


def ignored(name: str, patterns) -> bool:
    """``--ignore`` as llm-compressor reads it: 're:REGEX' from the start, else a name's end."""
    return any(re.match(p[3:], name) if p.startswith("re:") else name.endswith(p) for p in patterns or ())


def layer_linears(s: dict, ignore=()) -> dict[str, tuple[int, int]]:
    """(input width, output width) of each quantized Linear of one Llama-shaped decoder layer
    (``s``: quantkit.core.estimate.shape of its config)."""
    kv = s["kv_heads"] * s["head_dim"]
    linears = {
        "self_attn.q_proj": (s["hidden"], s["attn_out"]),
        "self_attn.k_proj": (s["hidden"], kv),
        "self_attn.v_proj": (s["hidden"], kv),
        "self_attn.o_proj": (s["attn_out"], s["hidden"]),
        "mlp.up_proj": (s["hidden"], s["inter"]),
        "mlp.down_proj": (s["inter"], s["hidden"]),
    }
    if not s["ungated"]:
        linears["mlp.gate_proj"] = (s["hidden"], s["inter"])
    return {k: v for k, v in linears.items() if not ignored(f"model.layers.0.{k}", ignore)}


def hessian_bytes(s: dict, ignore=()) -> int:
    """GPTQ's Hessians of one layer: every quantized Linear's n_in x n_in in fp32 at once, plus
    the two copies ``prepare_batch`` makes of the largest (normalized, stacked) as it compresses."""
    widths = [n_in for n_in, _ in layer_linears(s, ignore).values()]
    return sum(w * w * FP32 for w in widths) + 2 * max(widths, default=0) ** 2 * FP32


def balance_bytes(s: dict, ignore=()) -> int:
    """The largest group of weights one AWQ mapping (or one GPTQ batch of same-shape modules)
    handles at once, in bf16: q/k/v, o_proj, gate+up or down_proj."""
    lin = layer_linears(s, ignore)
    groups = [
        ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
        ("self_attn.o_proj",),
        ("mlp.gate_proj", "mlp.up_proj"),
        ("mlp.down_proj",),
    ]
    return max(sum(lin[n][0] * lin[n][1] for n in g if n in lin) for g in groups) * BF16


def awq_cached_width(s: dict, ignore=()) -> int:
    """Values per token that AWQ caches on the device for every sample (``_parent_args_cache``):
    self_attn's hidden states and rotary cos/sin, the MLP's input, down_proj's (gone when
    down_proj is ignored: quantkit drops that mapping), and o_proj's only without grouped KV
    heads (llm-compressor skips v_proj -> o_proj when the widths differ). Measured on a tiny
    Llama by tests/test_gpu_estimates.py."""
    width = s["hidden"] + 2 * s["head_dim"] + s["hidden"]
    if s["kv_heads"] * s["head_dim"] == s["attn_out"]:
        width += s["attn_out"]
    if not ignored("model.layers.0.mlp.down_proj", ignore):
        width += s["inter"]
    return width


def calibration_gpu_parts(s: dict, fp) -> dict[str, int]:
    """Peak bytes on the GPU of each pass ``fp`` runs (bf16 model, cuda:0), CUDA context excluded:
    {"embedding": ..., "awq": ..., "gptq": ...} (a pass the method does not run is absent)."""
    tokens = fp.calib_samples * fp.calib_seq_len
    batch_tokens = max(1, min(fp.calib_batch, fp.calib_samples)) * fp.calib_seq_len
    layer = s["layer_params"] * BF16
    temps = TEMPORARIES * batch_tokens * max(s["inter"], s["hidden"]) * BF16
    parts = {"embedding": s["vocab"] * s["hidden"] * BF16 + batch_tokens * s["hidden"] * BF16}
    if fp.awq:
        parts["awq"] = (
            layer
            + 2 * balance_bytes(s, fp.ignore)  # orig_layer_weights clone + the grid point's weights
            + tokens * awq_cached_width(s, fp.ignore) * BF16  # _parent_args_cache
            + 2 * tokens * s["hidden"] * BF16  # fp16_outputs and int_w_outputs of one parent
            + temps
        )
    if fp.hessians:
        widest = max((n_in for n_in, _ in layer_linears(s, fp.ignore).values()), default=0)
        parts["gptq"] = (
            layer
            + hessian_bytes(s, fp.ignore)
            + 2 * balance_bytes(s, fp.ignore) * (FP32 // BF16)  # the batch's weights in fp32, quantized copy
            + temps
            + batch_tokens * widest * FP32  # accumulate_hessian's fp32 input
        )
    return parts


def verify_gpu_bytes(base: int, artifact_runtime: int, vocab: int, logits_positions: int = VERIFY_TOKENS) -> int:
    """The verification child on the GPU: the base in its checkpoint dtype (``base`` bytes), then
    the artifact where it runs (one at a time), one pass of logits, its own CUDA context, and the
    quantize process's idle context beside it."""
    logits = logits_positions * vocab * (BF16 + FP32)  # bf16 out, .float() copy
    return max(base, artifact_runtime) + logits + CUDA_OVERHEAD_BYTES + CUDA_CONTEXT_BYTES
