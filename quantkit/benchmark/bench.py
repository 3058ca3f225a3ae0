"""``bench()``: load time, memory, prefill/decode speed, latency percentiles, achieved bandwidth,
smoke chat (a completion smoke for a model without a chat template) judged against the base's,
quality against the base and the gates, for any artifact, over the engine protocol.
Returns dataclasses and prints nothing (the CLI renders them).

Definitions follow the anchors (llama-bench, optimum-benchmark): prompt tokens are fixed (the
evaluation text's tokens, cycled), tokenization and sampling are outside the timed regions, each
repetition runs after ``warmup`` untimed ones, results are mean and sample stddev.
- prefill (pp): P prompt tokens into an empty context, one forward; TTFT = that time (the first
  token's logits are ready when it returns).
- decode (tg): N tokens fed one at a time into an empty context, every step timed (llama-bench's
  tg: depth 0); per-token latency percentiles are over all timed steps of all repetitions.
- peak RSS: sampled every 10 ms, separately during load and during the timed runs.
- achieved bandwidth: weight bytes a decode step reads (every weight once; of an untied input
  embedding table one row) x decode tokens/s. An artifact that runs dequantized (compressed-tensors
  AWQ in transformers decompresses to dense weights on its first forward) reads its dense size,
  and the result says so (``dequantized``, a note).
- GPU memory: torch's allocator peaks for transformers; for llama.cpp, which does not allocate
  through torch, the device's used memory (NVML, or torch's mem_get_info when torch already has a
  context) before and after load. Before loading, the memory preflight (quantkit.core.estimate's
  ``bench_need``) checks RAM and GPU; ``force`` skips it.
"""

import functools
import importlib
import os
import platform
import time
from dataclasses import dataclass, replace
from pathlib import Path

from quantkit.benchmark.gates import Gates
from quantkit.benchmark.quality import QualityOptions, eval_text
from quantkit.benchmark.result import BenchResult, Stat, percentiles_ms
from quantkit.benchmark.smoke import SmokeOptions
from quantkit.core import events
from quantkit.core.estimate import bench_n_ctx
from quantkit.core.manifest import library_versions, read_manifest
from quantkit.core.memory import PeakRSS, cuda_memory, device_memory, own_device_memory
from quantkit.core.settings import option, validate
from quantkit.engines import EngineOptions, engine_entry, engine_for, load_engine
from quantkit.engines.base import engine_option

VERSIONED = (
    "torch",
    "transformers",
    "accelerate",
    "llama-cpp-python",
    "bitsandbytes",
    "compressed-tensors",
    "gptqmodel",
    "numpy",
)


@dataclass
class BenchOptions:
    """bench's settings, declared once (quantkit/core/settings.py): ``quantkit bench``'s flags, a
    recipe's ``bench:`` keys and ``qk.bench(...)``'s parameters all come from these fields."""

    prompt_tokens: int = option(512, "Prefill length (pp).", minimum=1, short="-p")
    gen_tokens: int = option(128, "Decode length (tg).", minimum=1, short="-n")
    repetitions: int = option(5, "Timed repetitions of pp and tg.", minimum=1)
    warmup: int = option(1, "Untimed warm-up runs.", minimum=0)
    device: str = engine_option("device")  # declared once, with the engine's settings (engines/base.py)
    threads: int | None = engine_option("threads")
    n_gpu_layers: int = engine_option("n_gpu_layers")
    smoke: bool = option(True, "Run the smoke chat.")
    quality: bool = option(True, "Compare with the base model (PPL, KL divergence, top-1).")
    eval_tokens: int = option(1024, "Tokens of the evaluation text for quality (chunks of 512).", minimum=16)
    force: bool = option(False, "Skip the RAM/GPU memory preflight.", recipe=False)
    gates: Gates = option(None, "Gate thresholds.", cli=False, recipe=False)
    bandwidth: bool = option(True, "Measure (once, cached) the machine's copy bandwidth.", cli=False, recipe=False)
    smoke_options: SmokeOptions = option(None, "The smoke chat's limits.", cli=False, recipe=False)
    quality_options: QualityOptions = option(None, "Chunk length and text of the quality evaluation.", cli=False, recipe=False)

    def __post_init__(self):
        self.gates = self.gates or Gates()
        self.smoke_options = self.smoke_options or SmokeOptions()
        self.quality_options = replace(self.quality_options or QualityOptions(), max_tokens=self.eval_tokens)


def default_base(manifest: dict | None, download: bool = True) -> Path | None:
    """The model the artifact was made from, as recorded in its manifest; a hub model is fetched
    only with ``download`` (quality needs the base; the smoke alone does not justify a download)."""
    source = (manifest or {}).get("source") or {}
    if source.get("path") and Path(source["path"]).is_dir():
        return Path(source["path"])
    if source.get("model"):
        from quantkit.hub.bundled import is_bundled
        from quantkit.hub.model_ref import resolve_model

        model = str(source["model"])
        if download or is_bundled(model) or Path(model).expanduser().is_dir():
            return resolve_model(model)
    return None


def size_on_disk(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def environment(engine) -> dict:
    from quantkit.benchmark.bandwidth import machine_key

    env = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": machine_key().split("|")[1],
        "cpu_count": os.cpu_count(),
        "threads": engine.threads,
        "device": engine.device,
        "gpu": None,
        "versions": library_versions(*VERSIONED),
    }
    if engine.device == "cuda" and (torch := cuda_torch()):
        env["gpu"] = torch.cuda.get_device_name()
    return env


def cuda_torch():
    """torch when it sees a CUDA GPU, else None (llama.cpp may run on a GPU beside a CPU-only torch)."""
    try:
        import torch
    except ImportError:
        return None
    return torch if torch.cuda.is_available() else None


def timed_runs(engine, prompt: list[int], options: BenchOptions):
    """Prefill and decode timings of every repetition (warm-up runs discarded)."""
    sync = getattr(engine, "synchronize", lambda: None)
    prefill_s, decode_s, steps = [], [], []
    for rep in range(options.warmup + options.repetitions):
        engine.reset()
        sync()
        started = time.perf_counter()
        engine.forward(prompt)
        sync()
        prefill = time.perf_counter() - started
        engine.reset()
        rep_steps = []
        for i in range(options.gen_tokens):
            started = time.perf_counter()
            engine.forward([prompt[i % len(prompt)]])
            sync()
            rep_steps.append(time.perf_counter() - started)
        if rep >= options.warmup:
            prefill_s.append(prefill)
            decode_s.append(sum(rep_steps))
            steps += rep_steps
    engine.reset()
    return prefill_s, decode_s, steps


def bandwidth_record(engine, decode_tps: float, measure: bool, dequantized: bool = False) -> dict:
    from quantkit.benchmark.bandwidth import decode_bytes

    read = decode_bytes(engine)  # an untied input embedding table is read one row per token
    if dequantized:  # counted after the first forward: the dense weights the matmuls read
        read["counted"] += " (dense: dequantized on the first forward)"
    achieved = read["bytes"] * decode_tps / 1e9
    record = {
        "weights_bytes_per_token": read["bytes"],
        "achieved_gbps": round(achieved, 2),
        "copy_gbps": None,
        "fraction": None,
        "embedding_bytes": read["embedding_bytes"],
        "tied_embeddings": read["tied"],
        "counted": read["counted"],
    }
    if measure:
        from quantkit.benchmark import bandwidth

        if engine.device == "cuda":
            copy = bandwidth.measure_cuda_copy_gbps() if cuda_torch() else None
        else:
            copy = bandwidth.copy_bandwidth_gbps()
        if copy:
            record.update(copy_gbps=copy, fraction=round(achieved / copy, 3))
    return record


def bench(artifact: str | Path, *, base: str | Path | None = None, options: BenchOptions | None = None) -> BenchResult:
    """Benchmark and validate ``artifact`` (artifact folder, HF folder, .gguf file or bundled:NAME).
    Each long step (base, load, speed, smoke, quality) is reported as it starts, as a progress
    event on the ``quantkit`` logger (quantkit.core.events), for progress displays.

    One model in memory at a time: the base's reference (its logits and its smoke transcript) is
    read from the cache or computed by loading the base alone, then freed, before the artifact is
    loaded, so the peak is the larger of the two models, not their sum (on a GPU: one model on the
    device)."""
    from quantkit.benchmark.gates import check, gates_for
    from quantkit.core.weights import artifact_bits

    options = options or BenchOptions()
    validate(options, "bench")
    step = functools.partial(events.progress, events.logger(__name__), "bench")
    from quantkit.hub.model_ref import resolve_artifact

    path = resolve_artifact(artifact)
    manifest = read_manifest(path)
    notes = []
    if base is None and (options.quality or options.smoke):
        base = default_base(manifest, download=options.quality)
        if base is None:
            skipped = [
                w for w, on in (("quality skipped", options.quality), ("the smoke judged on its own", options.smoke)) if on
            ]
            where = "" if options.quality else " (or it is not on this machine)"
            notes.append(f"{' and '.join(skipped)}: no base model recorded in quantkit.json{where}; pass --base")
    elif base is not None:
        from quantkit.hub.model_ref import resolve_model

        base = resolve_model(base)
    base_engine_options = EngineOptions(device=options.device, threads=options.threads)
    name = engine_for(path)
    entry = engine_entry(name)
    n_ctx = bench_n_ctx(options)
    memory_preflight(path, entry.file_suffix, base, options, n_ctx)
    base_smoke = None
    if base is not None and (options.smoke or options.quality):
        step("base")
        base_smoke = base_references(base, options, base_engine_options)
    engine_options = EngineOptions(device=options.device, threads=options.threads, n_gpu_layers=options.n_gpu_layers, n_ctx=n_ctx)
    for module in entry.imports:  # library import time is not model load time
        importlib.import_module(module)
    step("load")
    # An engine's own GPU buffers (llama.cpp's) are not torch's: read the device before and after
    # (no torch context made).
    device_before = device_memory() if not entry.on_torch and options.device != "cpu" else None
    with PeakRSS() as load_peak:
        engine = load_engine(path, engine_options, engine=name)
    notes += list(getattr(engine, "warnings", []))
    if options.device == "cuda" and engine.device != "cuda":
        notes.append(f"--device cuda asked for, but {engine.name} ran on the CPU")
    try:
        prompt = engine.tokenize(eval_text(options.quality_options)) or [0]
        prompt = (prompt * (options.prompt_tokens // len(prompt) + 1))[: options.prompt_tokens]
        step("speed")
        torch_gpu = engine.device == "cuda" and entry.on_torch
        if torch_gpu and (torch := cuda_torch()):
            torch.cuda.reset_peak_memory_stats()
        with PeakRSS() as run_peak:
            prefill_s, decode_s, steps = timed_runs(engine, prompt, options)
        if engine.device != "cuda":
            cuda = {}
        else:
            cuda = cuda_memory() if torch_gpu else own_device_memory(device_before)
        dequantized = bool(getattr(engine, "dequantized", False))
        if dequantized:  # the method's own account when it wrote one (w8a8, fp8: quantkit.json "runtime")
            notes.append(
                "runs dequantized: "
                + (
                    ((manifest or {}).get("runtime") or {}).get("note")
                    or "transformers decompresses compressed-tensors weights to dense ones on the first forward, "
                    "so speed and bandwidth are those of dense matmuls (vLLM runs the quantized kernels)"
                )
            )
        prefill = Stat.of([options.prompt_tokens / s for s in prefill_s])
        decode = Stat.of([options.gen_tokens / s for s in decode_s])
        speed_tool = None
        if entry.speed_tool:  # pp/tg from the engine's own tool (llama-bench): the field's numbers
            from quantkit.benchmark.llama_bench import tool_speed

            speed_tool, prefill, decode = tool_speed(engine, options, prefill, decode, notes)
        smoke = quality = None
        if options.smoke:
            step("smoke")
            from quantkit.benchmark.smoke import against_base
            from quantkit.benchmark.smoke import smoke as run_smoke

            smoke = against_base(run_smoke(engine, options.smoke_options), base_smoke).to_dict()
        if options.quality and base is not None:
            step("quality")
            from quantkit.benchmark.quality import evaluate

            # The base's side comes from the cache filled above: the base is not loaded again.
            quality = evaluate(engine, base, options.quality_options, base_engine_options).to_dict()
        # One .gguf of a multi-type artifact: the manifest's totals are the folder's, not this file's.
        target = getattr(engine, "file", path)
        whole = manifest if manifest and target.is_dir() else {}
        size = int(whole.get("size_bytes") or size_on_disk(target))
        bpw = whole.get("bits_per_weight") or (round(engine.weights_bytes * 8 / engine.n_params, 3) if engine.n_params else None)
        bits = artifact_bits(manifest, target.name, bpw)
        gates = gates_for(bits, options.gates)
        smoke_gated = smoke if options.gates.smoke else None
        result = BenchResult(
            artifact=str(path),
            engine=engine.name,
            method=(manifest or {}).get("method"),
            bits=bits,
            size_bytes=size,
            weights_bytes=engine.weights_bytes,
            bits_per_weight=bpw,
            n_params=engine.n_params,
            prompt_tokens=options.prompt_tokens,
            gen_tokens=options.gen_tokens,
            repetitions=options.repetitions,
            load_s=round(load_peak.seconds, 3),
            load_peak_rss_mb=load_peak.mb,
            peak_rss_mb=run_peak.mb,
            prefill=prefill,
            decode=decode,
            ttft=Stat.of([s * 1e3 for s in prefill_s]),
            decode_latency_ms=percentiles_ms(steps),
            bandwidth=bandwidth_record(engine, decode.mean, options.bandwidth, dequantized),
            cuda=cuda,
            environment=environment(engine),
            base=str(base) if base else None,
            smoke=smoke,
            quality=quality,
            gates={"bits": bits, **gates.to_dict()},
            failures=check(gates, smoke_gated, quality),
            notes=notes,
            dequantized=dequantized,
            runtime_bytes=getattr(engine, "runtime_bytes", None),
            speed_tool=speed_tool,
        )
        result.failures += check(gates, None, None, result.to_dict())  # gated top-level metrics (core.metrics)
    finally:
        engine.close()
    return result


def memory_preflight(path: Path, file_suffix: str | None, base: Path | None, options: BenchOptions, n_ctx: int):
    """Refuse before loading anything when one model at a time (the base's reference, then the
    artifact) with its KV cache does not fit in RAM or on the GPU (quantkit.core.estimate.bench_need)."""
    from quantkit.core.estimate_files import bench_need_for
    from quantkit.core.preflight import check_fit, cuda_available

    device = options.device
    if device == "auto":
        device = "cuda" if cuda_available() else "cpu"
    # llama.cpp's offload as its engine resolves it: with device cuda, 0 means every layer.
    layers = (options.n_gpu_layers or -1) if options.device == "cuda" else options.n_gpu_layers
    need = bench_need_for(
        path,
        file_suffix,
        device,
        n_ctx,
        base=base if (options.quality or options.smoke) else None,
        n_gpu_layers=layers,
        quality_ctx=options.quality_options.ctx,
    )
    return check_fit(need, f"bench of {path.name} on {device}", options.force)


def base_references(base: Path, options: BenchOptions, engine_options: EngineOptions) -> dict | None:
    """Fill the caches of the base's side before the artifact is loaded: its smoke (returned) and
    its logits for quality. Each loads the base alone and frees it; a cached one loads nothing."""
    smoke = None
    if options.smoke:
        from quantkit.benchmark.smoke import base_smoke

        smoke, _ = base_smoke(base, options.smoke_options, engine_options)
        release_memory(engine_options.device)
    if options.quality:
        from quantkit.benchmark.quality import base_reference

        base_reference(Path(base), options.quality_options, engine_options)
        release_memory(engine_options.device)
    return smoke


def release_memory(device: str) -> None:
    """Hand a freed model's memory back before the next one loads: cycles collected, glibc's free
    heap trimmed (otherwise it stays in the process and the next load lands beside it: SmolLM2 in
    fp32, base then artifact, peaked at 1.62 GB untrimmed, 1.29 GB trimmed, 1.19 GB for one model),
    and torch's CUDA cache emptied."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass  # not glibc (macOS, musl): nothing to trim
    if device != "cpu" and (torch := cuda_torch()) is not None:
        torch.cuda.empty_cache()
