"""What each stage of a recipe will cost, from config.json alone: peak memory, disk, time.

Used by ``quantkit run --dry-run``. The numbers are rough on purpose (a factor of 2 either way):
they are there to tell "fits / does not fit" and "minutes / hours" apart before downloading
anything. The constants below say what they assume; they were taken from the measurements in
FACTS (SmolLM2 AWQ on this CPU) and from commonly published GPU figures.
"""

import json
import os
from dataclasses import dataclass
from pathlib import Path

from quantkit.modelinfo import DTYPE_BYTES, config_dtype, estimate_params, text_config
from quantkit.preflight import LIBRARY_ALLOWANCE_BYTES

DOWNLOAD_BYTES_PER_S = 50e6  # a typical hub download
DISK_BYTES_PER_S = 300e6  # reading/writing checkpoints
# AWQ calibration seconds per billion parameters per 1,000 calibration tokens
# (CPU: SmolLM2-135M, 64 x 256 tokens took ~15 min here; GPU: ~2 min for 7B at 128 x 512).
AWQ_S_PER_B_PER_KTOK = {"cpu": 400.0, "cuda": 0.25}
GGUF_QUANTIZE_S_PER_B = 40.0  # llama.cpp's quantizer, per type
DECODE_BANDWIDTH = {"cpu": 10e9, "cuda": 1.5e12}  # bytes/s actually achieved in batch-1 decode
HF_CPU_DECODE_CAP = 20.0  # tok/s: transformers' decode loop on CPU is Python-bound (FACTS)
SMOKE_TOKENS = 3 * 128  # three turns of the smoke chat, a typical reply length each
GGUF_BITS = {"F16": 16, "BF16": 16, "Q8_0": 8.5, "Q6_K": 6.56, "Q5_K_M": 5.69, "Q5_K_S": 5.54, "Q5_0": 5.5,
             "Q4_K_M": 4.85, "Q4_K_S": 4.58, "Q4_0": 4.5, "Q3_K_M": 3.91, "Q2_K": 3.35}
# Peak RAM of quantizing, as a multiple of the checkpoint's size (quantize-at-load peaks above it).
PEAK_FACTOR = {"awq": 1.3, "nf4": 1.3, "int8": 1.3, "gguf": 0.3}
CONFIG_DIR_ENV = "QUANTKIT_CONFIG_DIR"  # a folder of NAME.json configs for offline dry runs (tests, CI)


@dataclass
class Cost:
    memory_bytes: int
    disk_bytes: int
    seconds: float


def find_config(model_id: str, source: str, revision: str | None, local_config: Path | None) -> tuple[dict | None, str]:
    """A config.json for planning without downloading: the recipe's local_config, the folder
    named by $QUANTKIT_CONFIG_DIR, a local model folder, the bundled cache or the HF cache."""
    candidates = []
    if local_config:
        candidates.append(Path(local_config))
    if os.environ.get(CONFIG_DIR_ENV):
        candidates.append(Path(os.environ[CONFIG_DIR_ENV]) / f"{model_id.rstrip('/').split('/')[-1].lower()}.json")
    if model_id.startswith("bundled:"):
        from quantkit.paths import quantkit_home

        candidates.append(quantkit_home() / "bundled" / model_id.split(":", 1)[1] / "config.json")
    candidates.append(Path(model_id).expanduser() / "config.json")
    for path in candidates:
        if path.is_file():
            return json.loads(path.read_text()), str(path)
    if source == "hf" and model_id.count("/") == 1:
        try:
            from huggingface_hub import try_to_load_from_cache

            cached = try_to_load_from_cache(model_id, "config.json", revision=revision)
            if isinstance(cached, str):
                return json.loads(Path(cached).read_text()), cached
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


def artifact_bytes(config: dict, method: str, group_size: int | None, gguf_types: list[str]) -> int:
    """Weights on disk: quantized linear layers plus embeddings kept in 16 bits."""
    n, embed = estimate_params(config), embedding_params(config)
    body = max(n - embed, 0)
    if method == "gguf":
        return int(sum(n * GGUF_BITS.get(t, 8) / 8 for t in gguf_types))
    bits = {"awq": 4 + 32 / (group_size or 128), "nf4": 4.5, "int8": 8.1}[method]
    return int(body * bits / 8 + embed * 2)


def download_cost(config: dict, local: bool) -> Cost:
    size = checkpoint_bytes(config)
    return Cost(0, 0 if local else size, 0.0 if local else size / DOWNLOAD_BYTES_PER_S)


def quantize_cost(config: dict, spec, device: str) -> Cost:
    size, n_b = checkpoint_bytes(config), estimate_params(config) / 1e9
    out = artifact_bytes(config, spec.method, spec.group_size, spec.gguf_types)
    memory = int(size * PEAK_FACTOR[spec.method]) + LIBRARY_ALLOWANCE_BYTES
    seconds = size / DISK_BYTES_PER_S * 2
    if spec.method == "awq":
        ktok = (spec.calib_samples or 128) * (spec.calib_seq_len or 512) / 1000
        seconds += n_b * ktok * AWQ_S_PER_B_PER_KTOK[device]
    if spec.method == "gguf":
        out += estimate_params(config) * 2  # the F16 intermediate the converter writes first
        seconds += n_b * GGUF_QUANTIZE_S_PER_B * len(spec.gguf_types)
    return Cost(memory, out, seconds)


def bench_cost(config: dict, spec, bench, device: str) -> Cost:
    """Load + warm-up + repetitions of pp/tg + quality, for each GGUF type."""
    types = spec.gguf_types or [None]
    per_target = artifact_bytes(config, spec.method, spec.group_size, types[:1] if types[0] else [])
    decode_tps = DECODE_BANDWIDTH[device] / max(per_target, 1)
    if device == "cpu" and spec.method != "gguf":
        decode_tps = min(decode_tps, HF_CPU_DECODE_CAP)
    one = (bench.gen_tokens / decode_tps + bench.prompt_tokens / (decode_tps * 8)) * (bench.repetitions + bench.warmup)
    quality = 2 * (bench.quality_tokens or 1024) / (decode_tps * 8) if bench.quality else 0.0
    smoke = SMOKE_TOKENS / decode_tps if bench.smoke else 0.0
    load = per_target / DISK_BYTES_PER_S
    return Cost(per_target + LIBRARY_ALLOWANCE_BYTES, 0, (one + quality + smoke + load) * len(types))
