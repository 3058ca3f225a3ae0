"""What each stage of a recipe will cost, from config.json alone: peak RAM, peak GPU memory,
disk, time.

``quantize_need`` and ``bench_need`` are the one estimate of each stage's memory: the real
preflight (quantkit.core.preflight.check_fit, called by every method's ``check`` and by ``bench``) and
``quantkit run --dry-run`` both use them. Where the weights live decides which memory they count:
AWQ on a GPU keeps the model in RAM (bf16) and onloads one decoder layer at a time to the GPU;
bitsandbytes on a GPU quantizes straight onto the device; bench holds one model at a time.

Used by ``quantkit run --dry-run``. The numbers are rough on purpose (a factor of 2 either way):
they are there to tell "fits / does not fit" and "minutes / hours" apart before downloading
anything. The constants below say what they assume; they were taken from the measurements in
FACTS (SmolLM2 AWQ on this CPU) and from commonly published GPU figures.
"""

import os
from dataclasses import dataclass
from pathlib import Path

from quantkit.core.atomic import read_json
from quantkit.core.estimate_gpu import CUDA_OVERHEAD_BYTES, calibration_gpu_parts, verify_gpu_bytes
from quantkit.core.estimate_gpu import awq_cached_width as cached_width
from quantkit.core.modelinfo import DTYPE_BYTES, UNGATED_MLP, config_dtype, estimate_params, human_size, text_config

# torch + transformers + tokenizer already take this much RAM before the first weight is read.
LIBRARY_ALLOWANCE_BYTES = 600 * 2**20

DOWNLOAD_BYTES_PER_S = 50e6  # a typical hub download
DISK_BYTES_PER_S = 300e6  # reading/writing checkpoints
# AWQ calibration seconds per billion parameters per 1,000 calibration tokens
# (CPU: SmolLM2-135M, 64 x 256 tokens took ~15 min here; GPU: ~2 min for 7B at 128 x 512).
AWQ_S_PER_B_PER_KTOK = {"cpu": 400.0, "cuda": 0.25}
GGUF_QUANTIZE_S_PER_B = 40.0  # llama.cpp's quantizer, per type
IMATRIX_S_PER_B_PER_KTOK = 8.0  # llama-imatrix on the CPU (SmolLM2, 16 x 64 tokens: ~2 s)
DECODE_BANDWIDTH = {"cpu": 10e9, "cuda": 1.5e12}  # bytes/s actually achieved in batch-1 decode
HF_CPU_DECODE_CAP = 20.0  # tok/s: transformers' decode loop on CPU is Python-bound (FACTS)
SMOKE_TOKENS = 3 * 128  # three turns of the smoke chat, a typical reply length each
# Peak RAM of quantizing on the CPU, as a multiple of the model's size in the dtype it is held in:
# AWQ calibrates in fp32 and saves a 16-bit copy; llama.cpp's lazy converter holds about one F16 copy.
CPU_RAM_FACTOR = {"calibrate": 2.0, "convert": 1.2}
# AWQ on a GPU: the model stays in RAM in bf16 (+ the compressed copy save_pretrained builds).
AWQ_GPU_RAM_FACTOR = 1.3
# FP8 (data-free): the checkpoint-dtype model in RAM, compressed module by module when saved.
DATAFREE_RAM_FACTOR = 1.1
# llama.cpp's compute buffers on the device beside weights and KV cache (n_batch 512).
LLAMACPP_COMPUTE_BYTES = 512 * 2**20
CONFIG_DIR_ENV = "QUANTKIT_CONFIG_DIR"  # a folder of NAME.json configs for offline dry runs (tests, CI)


@dataclass
class Cost:
    memory_bytes: int  # peak RAM
    disk_bytes: int
    seconds: float
    gpu_bytes: int = 0  # peak memory on the one GPU the stage uses (0: none)


@dataclass
class Need:
    """Peak memory of one stage: RAM and GPU (0 when the stage does not use one), and what
    each counts, for the preflight's message."""

    ram_bytes: int
    gpu_bytes: int = 0
    why: str = ""


def find_config(model_id: str, source: str, revision: str | None, local_config: Path | None) -> tuple[dict | None, str]:
    """A config.json for planning without downloading: the recipe's local_config, the folder
    named by $QUANTKIT_CONFIG_DIR, a local model folder, the bundled cache or the HF cache."""
    candidates = []
    if local_config:
        candidates.append(Path(local_config))
    if os.environ.get(CONFIG_DIR_ENV):
        candidates.append(Path(os.environ[CONFIG_DIR_ENV]) / f"{model_id.rstrip('/').split('/')[-1].lower()}.json")
    if model_id.startswith("bundled:"):
        from quantkit.core.paths import quantkit_home

        candidates.append(quantkit_home() / "bundled" / model_id.split(":", 1)[1] / "config.json")
    candidates.append(Path(model_id).expanduser() / "config.json")
    for path in candidates:
        if path.is_file():
            return read_json(path), str(path)
    if source == "hf" and model_id.count("/") == 1:
        try:
            from huggingface_hub import try_to_load_from_cache

            cached = try_to_load_from_cache(model_id, "config.json", revision=revision)
            if isinstance(cached, str):
                return read_json(cached), cached
        except Exception:  # a planning aid only: no cache is not an error
            pass
    return None, "no config.json available offline (set model.local_config to plan with estimates)"


def checkpoint_bytes(config: dict) -> int:
    per_param = DTYPE_BYTES.get(config_dtype(config).replace("torch.", ""), 2)
    return estimate_params(config) * per_param


def embedding_params(config: dict) -> int:
    cfg = text_config(config)
    tied = cfg.get("tie_word_embeddings", config.get("tie_word_embeddings"))
    return (cfg.get("vocab_size") or 0) * (cfg.get("hidden_size") or 0) * (1 if tied else 2)


@dataclass(frozen=True)
class Footprint:
    """What the estimates need to know about a method with its settings (each method declares
    it in ``footprint(options)``): how it quantizes, the bits per weight of each file it writes,
    whether transformers runs it decompressed, and its calibration set's size."""

    # "calibrate" (llm-compressor: fp32 on the CPU, layer by layer on a GPU), "load", "datafree", or
    # "convert": converted on the CPU to one self-contained file per type, embeddings quantized too,
    # run offloaded by layers (GGUF through llama.cpp)
    kind: str
    bits: tuple[float, ...]  # per weight of each file (GGUF: one per type), scales included
    dense_runtime: bool = False  # compressed-tensors in transformers: dense once decompressed
    calib_samples: int = 0
    calib_seq_len: int = 0
    ignore: tuple[str, ...] = ()
    dtype: str | None = None  # of the model while it quantizes at load ("load" methods)
    files: tuple[str, ...] = ()  # names of the files (GGUF types), for the bench's rows
    calib_s_factor: float = 1.0  # calibration time relative to AWQ's (GPTQ's Hessians are quicker)
    calib_batch: int = 1  # samples per forward of the calibration pipeline (llm-compressor's default 1)
    awq: bool = False  # an AWQ pass: every sample's parent inputs cached on the GPU
    hessians: bool = False  # a GPTQ pass: n_in x n_in fp32 Hessians per Linear of a layer


def gguf_footprint(types: list[str], bits: tuple[float, ...], calib_samples: int = 0, calib_seq_len: int = 0) -> Footprint:
    """One file per GGUF type, each at its bits per weight (the gguf method's table)."""
    return Footprint(
        "convert",
        tuple(bits),
        calib_samples=calib_samples,
        calib_seq_len=calib_seq_len,
        files=tuple(types),
    )


def artifact_bytes(config: dict, fp: Footprint, file: int | None = None) -> int:
    """Weights on disk (of every file, or of file ``file``): quantized layers plus 16-bit
    embeddings; a GGUF file quantizes the embeddings too."""
    n, embed = estimate_params(config), embedding_params(config)
    body = max(n - embed, 0)
    bits = fp.bits if file is None else fp.bits[file : file + 1]
    if fp.kind == "convert":
        return int(sum(n * b / 8 for b in bits))
    return int(sum(body * b / 8 + embed * 2 for b in bits))


def download_cost(config: dict, local: bool) -> Cost:
    size = checkpoint_bytes(config)
    return Cost(0, 0 if local else size, 0.0 if local else size / DOWNLOAD_BYTES_PER_S)


def dtype_bytes(dtype: str | None, config: dict, default: str | None = None) -> int:
    """Bytes per parameter of ``dtype`` ("auto"/None: ``default``, else the checkpoint's)."""
    name = dtype if dtype and dtype != "auto" else (default or config_dtype(config))
    return DTYPE_BYTES.get(str(name).replace("torch.", ""), 4)


def shape(config: dict) -> dict:
    """The widths the estimates need, from a Llama-shaped reading of config.json."""
    cfg = text_config(config)
    hidden = cfg.get("hidden_size") or cfg.get("n_embd") or cfg.get("d_model") or 0
    heads = cfg.get("num_attention_heads") or cfg.get("n_head") or 1
    head_dim = cfg.get("head_dim") or (hidden // heads if heads else 0)
    layers = cfg.get("num_hidden_layers") or cfg.get("n_layer") or 1
    n, embed = estimate_params(config), embedding_params(config)
    return {
        "hidden": hidden,
        "layers": layers,
        "vocab": cfg.get("vocab_size") or 0,
        "head_dim": head_dim,
        "attn_out": heads * head_dim,
        "kv_heads": cfg.get("num_key_value_heads") or cfg.get("num_kv_heads") or heads,
        "inter": cfg.get("ffn_hidden_size") or cfg.get("intermediate_size") or cfg.get("n_inner") or 4 * hidden,
        "ungated": str(cfg.get("model_type") or config.get("model_type") or "") in UNGATED_MLP,
        "layer_params": max(n - embed - hidden, 0) // layers,
        "params": n,
    }


def kv_cache_bytes(config: dict, n_ctx: int, per_value: int = 2) -> int:
    """K and V of every layer for ``n_ctx`` positions."""
    s = shape(config)
    return 2 * s["layers"] * s["kv_heads"] * s["head_dim"] * n_ctx * per_value


def awq_cached_width(config: dict, ignore: list[str]) -> int:
    """Sum of the input widths whose activations llm-compressor 0.14's AWQ caches for every
    calibration sample (quantkit.core.estimate_gpu.awq_cached_width)."""
    return cached_width(shape(config), ignore)


def quantize_need(config: dict, fp: Footprint, device: str, verify_on: str = "cuda") -> Need:
    """Peak RAM and GPU memory of quantizing as ``fp`` says on ``device``, the verification that
    ends the stage included (on a GPU: where ``verify_on`` says, see ``with_verification``)."""
    s, n = shape(config), estimate_params(config)
    if fp.kind == "calibrate":
        samples, seq = fp.calib_samples, fp.calib_seq_len
        if device == "cuda":
            # The bf16 model stays in RAM; the GPU holds one subgraph and the largest pass's state
            # (quantkit.core.estimate_gpu counts it from llm-compressor's sources).
            parts = calibration_gpu_parts(s, fp)
            gpu = max(parts.values()) + CUDA_OVERHEAD_BYTES
            # RAM: the model in bf16 and the layer inputs offloaded there between layers.
            ram = int(n * 2 * AWQ_GPU_RAM_FACTOR + 2 * samples * seq * s["hidden"] * 2) + LIBRARY_ALLOWANCE_BYTES
            why = f"bf16 model in RAM, one layer + {samples}x{seq} activations on the GPU"
            return with_verification(config, fp, Need(ram, int(gpu), why), verify_on)
        cached = samples * seq * awq_cached_width(config, list(fp.ignore)) * 4
        ram = int(n * 4 * CPU_RAM_FACTOR["calibrate"] + cached) + LIBRARY_ALLOWANCE_BYTES
        return Need(ram, 0, "fp32 model + activations in RAM")
    if fp.kind == "datafree":
        # llm-compressor's data-free pipeline: the whole model in its checkpoint dtype on the CPU,
        # each module onloaded to the GPU to be quantized (the largest weight and its fp8 copy).
        ram = int(n * dtype_bytes(None, config) * DATAFREE_RAM_FACTOR) + LIBRARY_ALLOWANCE_BYTES
        if device != "cuda":
            return Need(ram, 0, "checkpoint-dtype model in RAM")
        largest = max(s["vocab"] * s["hidden"], s["inter"] * s["hidden"]) * 3  # bf16 weight + fp8 copy
        return with_verification(config, fp, Need(ram, largest + CUDA_OVERHEAD_BYTES, "checkpoint-dtype model in RAM"), verify_on)
    if fp.kind == "load":
        if device == "cuda":
            # transformers quantizes each weight as it lands on the device: the quantized model,
            # plus the largest tensor in 16 bits on its way (usually the embedding table).
            quantized = artifact_bytes(config, fp)
            largest = max(s["vocab"] * s["hidden"], s["inter"] * s["hidden"]) * 2
            ram = quantized + LIBRARY_ALLOWANCE_BYTES  # save_pretrained brings the state dict back to RAM
            need = Need(ram, quantized + largest + CUDA_OVERHEAD_BYTES, "quantized weights on the GPU")
            return with_verification(config, fp, need, verify_on)
        # Read with pread (quantization/pread_load.py): the quantized model and one 16-bit tensor on
        # its way; then the verification child's base, fp32 one module at a time, beside the idle parent.
        loading = artifact_bytes(config, fp) + max(s["vocab"] * s["hidden"], s["inter"] * s["hidden"]) * 2
        verifying = cpu_reference_bytes(config) + LIBRARY_ALLOWANCE_BYTES
        return Need(max(loading, verifying) + LIBRARY_ALLOWANCE_BYTES, 0, "quantize at load, then verification, in RAM")
    # llama.cpp's converter and quantizer run on the CPU
    return Need(int(n * 2 * CPU_RAM_FACTOR["convert"]) + LIBRARY_ALLOWANCE_BYTES, 0, "F16 conversion in RAM")


def with_verification(config: dict, fp: Footprint, need: Need, verify_on: str = "cuda") -> Need:
    """The quantize stage on a GPU ends with verification in a child process (the quantize
    model freed first): base, then artifact, one at a time on the GPU; its peak is the stage's
    when larger. ``verify_on="cpu"``: the base and artifact verify in RAM instead (what
    quantkit.quantization.verify falls back to when they do not fit the GPU)."""
    runtime, _ = runtime_bytes(config, fp, "cuda")  # the artifact in its own dtype (bf16 when dense)
    if verify_on == "cpu":
        base = cpu_reference_bytes(config)  # the base in its own dtype, fp32 one module at a time
        ram = max(base, runtime) + LIBRARY_ALLOWANCE_BYTES
        return Need(max(need.ram_bytes, ram), need.gpu_bytes, f"{need.why}; verification in RAM")
    base = estimate_params(config) * dtype_bytes(None, config)
    verify = verify_gpu_bytes(base, runtime, shape(config)["vocab"])
    why = f"{need.why}; verification on the GPU {human_size(verify)}" if verify > need.gpu_bytes else need.why
    return Need(need.ram_bytes, max(need.gpu_bytes, verify), why)


def cpu_reference_bytes(config: dict) -> int:
    """RAM of an unquantized model computing in fp32 on the CPU (bench's base pass, verification):
    its weights stay in the checkpoint's dtype and each module is upcast for its own forward
    (quantkit/engines/upcast.py), so the checkpoint plus the largest weight (lm_head) in fp32."""
    s = shape(config)
    largest = max(s["vocab"] * s["hidden"], s["inter"] * s["hidden"]) * 4
    return estimate_params(config) * dtype_bytes(None, config) + largest


def runtime_bytes(config: dict, fp: Footprint | None, device: str, file: int = 0) -> tuple[int, bool]:
    """Bytes the loaded artifact holds where it runs, and whether it runs dequantized: a
    compressed-tensors AWQ artifact in transformers decompresses to dense weights on its first
    forward (bf16 on a GPU, fp32 on the CPU), so it holds and reads the dense size."""
    n = estimate_params(config)
    dense = n * (4 if device == "cpu" else 2)
    if fp is not None and fp.dense_runtime:
        return dense, True
    if fp is not None:
        return artifact_bytes(config, fp, file), False
    return (cpu_reference_bytes(config) if device == "cpu" else n * dtype_bytes(None, config)), False  # unquantized


def bench_need(
    config: dict,
    fp: Footprint | None,
    device: str,
    n_ctx: int,
    *,
    file: int = 0,
    with_base: bool = True,
    n_gpu_layers: int | None = -1,
    quality_ctx: int = 512,
    runtime: int | None = None,
    base_runtime: int | None = None,
) -> Need:
    """Peak memory of benching one artifact: one model at a time (the base's reference first,
    unless cached, then the artifact), each with its KV cache for ``n_ctx`` and a chunk of logits.
    ``runtime``/``base_runtime`` replace the config-based sizes when the files are at hand."""
    s = shape(config)
    art, _ = runtime_bytes(config, fp, device, file) if runtime is None else (runtime, None)
    base = 0
    if with_base:
        base = base_runtime if base_runtime is not None else runtime_bytes(config, None, device)[0]
    kv = kv_cache_bytes(config, n_ctx, 4 if device == "cpu" else 2)
    logits = quality_ctx * s["vocab"] * 4
    if device != "cuda":
        return Need(max(art, base) + kv + logits + LIBRARY_ALLOWANCE_BYTES, 0, "one model at a time in RAM")
    if fp is not None and fp.kind == "convert":
        share = 1.0 if n_gpu_layers is None or n_gpu_layers < 0 else min(n_gpu_layers, s["layers"]) / s["layers"]
        on_gpu = int(art * share) + kv + LLAMACPP_COMPUTE_BYTES
        # The base's reference runs in transformers on the GPU before llama.cpp loads.
        gpu = max(on_gpu, base + kv + logits + CUDA_OVERHEAD_BYTES if base else 0)
        return Need(int(art * (1 - share)) + LIBRARY_ALLOWANCE_BYTES, gpu, f"GGUF with {share:.0%} of layers on the GPU")
    gpu = max(art, base) + kv + logits + CUDA_OVERHEAD_BYTES
    return Need(LIBRARY_ALLOWANCE_BYTES + max(art, base) // 10, gpu, "one model at a time on the GPU")


def quantize_cost(config: dict, fp: Footprint, device: str) -> Cost:
    size, n_b = checkpoint_bytes(config), estimate_params(config) / 1e9
    out = artifact_bytes(config, fp)
    need = quantize_need(config, fp, device if fp.kind != "convert" else "cpu")
    seconds = size / DISK_BYTES_PER_S * 2
    ktok = fp.calib_samples * fp.calib_seq_len / 1000
    if fp.kind == "calibrate":
        seconds += n_b * ktok * AWQ_S_PER_B_PER_KTOK[device] * fp.calib_s_factor
    if fp.kind == "convert":
        out += estimate_params(config) * 2  # the F16 intermediate the converter writes first
        seconds += n_b * GGUF_QUANTIZE_S_PER_B * len(fp.bits) + n_b * ktok * IMATRIX_S_PER_B_PER_KTOK
    return Cost(need.ram_bytes, out, seconds, need.gpu_bytes)


def bench_n_ctx(bench) -> int:
    """The context bench loads engines with (quantkit.benchmark.bench)."""
    return max(4096, bench.prompt_tokens + bench.gen_tokens + 8)


def bench_cost(config: dict, fp: Footprint, bench, device: str) -> Cost:
    """Load + warm-up + repetitions of pp/tg + quality, for each file; memory of the largest."""
    read, _ = runtime_bytes(config, fp, device)  # what a decode step reads
    decode_tps = DECODE_BANDWIDTH[device] / max(read, 1)
    if device == "cpu" and fp.kind != "convert":
        decode_tps = min(decode_tps, HF_CPU_DECODE_CAP)
    one = (bench.gen_tokens / decode_tps + bench.prompt_tokens / (decode_tps * 8)) * (bench.repetitions + bench.warmup)
    quality = 2 * bench.eval_tokens / (decode_tps * 8) if bench.quality else 0.0
    smoke = SMOKE_TOKENS / decode_tps if bench.smoke else 0.0
    load = artifact_bytes(config, fp, 0) / DISK_BYTES_PER_S
    needs = [
        bench_need(
            config,
            fp,
            device,
            bench_n_ctx(bench),
            file=i,
            with_base=bench.quality or bench.smoke,
            n_gpu_layers=gpu_layers(bench, device),
        )
        for i in range(len(fp.bits))
    ]
    return Cost(
        max(n.ram_bytes for n in needs), 0, (one + quality + smoke + load) * len(fp.bits), max(n.gpu_bytes for n in needs)
    )


def gpu_layers(bench, device: str) -> int | None:
    """llama.cpp's offload as the engine resolves it: on cuda, 0 (the default) means all layers."""
    layers = getattr(bench, "n_gpu_layers", 0)
    return -1 if device == "cuda" and not layers else layers
