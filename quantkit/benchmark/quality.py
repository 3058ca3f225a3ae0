"""Quality against the base model, teacher forced on the same token ids (llama-perplexity's KL
mode): perplexity of each, PPL ratio, KL divergence (mean, median, p90/p95/p99/p99.9, max), "same
top token" share and RMS of the change in the correct token's probability.

The base model's side is computed once per (base weights, text, settings) and cached under the
quantkit cache the way llama-perplexity stores its ``--kl-divergence-base`` file: for every scored
position the full vocabulary's log-probabilities, uint16-quantized over the 16 nats below the top
one (a scale and an offset per row; tokens under -16 nats are left out of the sum, as llama.cpp
does), plus the exact log-probability of the correct token. KL is then summed over the
whole vocabulary, so it is llama.cpp's number (docs/bench.md: the cost on disk, the agreement).
"""

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np

from quantkit.core.errors import InputError
from quantkit.core.paths import cache_dir
from quantkit.core.weights import weights_identity

CACHE_VERSION = 2  # 2: full-vocabulary uint16 log-probs (1 kept the top 64)
LOGP_RANGE = 16.0  # nats below the top log-prob that are stored (llama-perplexity's log_softmax)
LEVELS = 65535


@dataclass
class QualityOptions:
    max_tokens: int = 1024  # evaluation tokens taken from the text (chunks of ``ctx``)
    ctx: int = 512  # chunk length; the second half of each chunk is scored (as llama-perplexity)
    text: Path | None = None  # default: quantkit/data/eval.txt


@dataclass
class QualityResult:
    tokenizer_parity: bool
    tokens_scored: int = 0
    ppl: float | None = None
    base_ppl: float | None = None
    ppl_ratio: float | None = None
    kld_mean: float | None = None
    kld_median: float | None = None
    kld_p90: float | None = None
    kld_p95: float | None = None
    kld_p99: float | None = None
    kld_p999: float | None = None
    kld_max: float | None = None
    top1_agreement: float | None = None  # share of positions where both models' top token agree
    rms_dp: float | None = None  # RMS of p_artifact(correct) - p_base(correct), a fraction
    base: str = ""
    base_cached: bool = False
    seconds: float = 0.0
    failures: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def eval_text(options: QualityOptions) -> str:
    if options.text:
        return Path(options.text).read_text(encoding="utf-8")
    return resources.files("quantkit").joinpath("data/eval.txt").read_text(encoding="utf-8")


def chunks(ids: list[int], ctx: int) -> list[list[int]]:
    ctx = min(ctx, len(ids))
    return [ids[s : s + ctx] for s in range(0, len(ids) - ctx + 1, ctx)]


def log_softmax(logits: np.ndarray) -> np.ndarray:
    x = logits.astype(np.float32, copy=True)
    x -= x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def scored_logprobs(engine, ids: list[int], options: QualityOptions):
    """For every scored position: (log-probs over the vocab, the correct next token), per chunk."""
    for chunk in chunks(ids, options.ctx):
        first = len(chunk) // 2
        logp = log_softmax(engine.logits(chunk, first)[:-1])  # only the scored rows are computed
        yield logp, np.asarray(chunk[first + 1 :])


def reference_key(base: Path, text: str, options: QualityOptions, engine_name: str, engine_options=None) -> str:
    """The base logits' cache key: base_key's (weights, engine, device, dtype, GPU layers) and the
    text and settings; logits computed in bf16 on a GPU are not those of fp32 on the CPU."""
    return base_key(
        base,
        engine_name,
        engine_options,
        ["logits", hashlib.sha256(text.encode()).hexdigest(), options.max_tokens, options.ctx, LOGP_RANGE],
    )


def run_where(engine_name: str, engine_options=None) -> list:
    """Device, dtype and GPU layers a model runs with, for cache keys ("auto" resolved for torch)."""
    from quantkit.engines import engine_entry

    device = getattr(engine_options, "device", "auto") or "auto"
    if device == "auto" and engine_entry(engine_name).on_torch:
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    return [device, getattr(engine_options, "dtype", None), getattr(engine_options, "n_gpu_layers", 0)]


def base_key(base: Path, engine_name: str, engine_options, settings) -> str:
    """Cache key of anything computed on the base model (logits, smoke transcript): CACHE_VERSION,
    the base's path and weights identity, engine, device and dtype, and ``settings`` (JSON-able)."""
    blob = json.dumps(
        [
            CACHE_VERSION,
            str(Path(base).resolve()),
            weights_identity(base),
            engine_name,
            run_where(engine_name, engine_options),
            settings,
        ],
        default=str,
        ensure_ascii=False,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def base_reference(base: Path, options: QualityOptions, engine_options=None) -> tuple[dict, bool]:
    """The base model's ids, quantized full-vocabulary log-probs and correct-token log-probs:
    cached, or computed by loading the base (then freed). Returns (reference, was_cached)."""
    from quantkit.engines import engine_for, load_engine

    text = eval_text(options)
    name = engine_for(base)
    file = cache_dir("base-logits") / f"{reference_key(base, text, options, name, engine_options)}.npz"
    if file.is_file():
        with np.load(file) as data:
            return {k: data[k] for k in data.files}, True
    engine = load_engine(base, engine_options)
    try:
        ids = engine.tokenize(text)[: options.max_tokens]
        if len(ids) < 8:
            raise InputError("the evaluation text is too short", hint="give at least a few hundred tokens")
        parts = [
            (*compress_logprobs(logp), logp[np.arange(len(target)), target], logp.argmax(axis=-1))
            for logp, target in scored_logprobs(engine, ids, options)
        ]
    finally:
        engine.close()
    codes, scale, offset, target_logp, top = (np.concatenate(column) for column in zip(*parts))
    ref = {
        "ids": np.asarray(ids, dtype=np.int32),
        "logp_u16": codes,
        "scale": scale,
        "offset": offset,
        "target_logp": target_logp.astype(np.float32),
        "top_idx": top.astype(np.int32),
    }
    partial = file.with_name(f".{file.stem}.{os.getpid()}.npz")
    np.savez_compressed(partial, **ref)
    os.replace(partial, file)  # never leave a half-written cache entry
    return ref, False


def compress_logprobs(logp: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """llama-perplexity's storage of log-prob rows: uint16 codes over [top - 16 nats, top], 0 below.
    Returns (codes, scale, offset), log-prob = offset + scale * code for every code above 0."""
    top = logp.max(axis=-1, keepdims=True)
    low = np.maximum(logp.min(axis=-1, keepdims=True), top - LOGP_RANGE)
    scale = (top - low) / LEVELS
    safe = np.where(scale > 0, scale, 1.0)
    codes = np.where(logp > low, np.rint((logp - low) / safe), 0).astype(np.uint16)
    return codes, scale[:, 0].astype(np.float32), low[:, 0].astype(np.float32)


def kld_full(codes: np.ndarray, scale: np.ndarray, offset: np.ndarray, logq: np.ndarray) -> np.ndarray:
    """KL(base || artifact) per position over the whole vocabulary from the stored base rows; as in
    llama-perplexity, tokens whose base log-prob is -16 or less count as 0 (p < 1.2e-7)."""
    logp = offset[:, None] + scale[:, None] * codes.astype(np.float32)
    keep = logp > -LOGP_RANGE
    vocab = codes.shape[-1]
    if logq.shape[-1] < vocab:  # a smaller vocab: its missing tokens get ~0 probability
        logq = np.pad(logq, ((0, 0), (0, vocab - logq.shape[-1])), constant_values=-1e9)
    terms = np.where(keep, np.exp(logp) * (logp - logq[:, :vocab]), 0.0)
    return np.maximum(terms.sum(axis=-1, dtype=np.float64), 0.0)


def evaluate(engine, base: Path | str, options: QualityOptions | None = None, base_engine_options=None) -> QualityResult:
    """Compare ``engine`` (the artifact, loaded) with the model at ``base`` on the evaluation text."""
    options = options or QualityOptions()
    started = time.perf_counter()
    ref, cached = base_reference(Path(base), options, base_engine_options)
    result = QualityResult(tokenizer_parity=True, base=str(base), base_cached=cached)
    ids = engine.tokenize(eval_text(options))[: options.max_tokens]
    if ids != ref["ids"].tolist():
        same = next((i for i, (a, b) in enumerate(zip(ids, ref["ids"].tolist())) if a != b), min(len(ids), len(ref["ids"])))
        result.tokenizer_parity = False
        result.failures.append(
            f"tokenizer differs from the base's (first difference at token {same}): "
            "the artifact does not read text as its base does"
        )
        result.seconds = round(time.perf_counter() - started, 2)
        return result
    kld, agree, logq_t = [], [], []
    row = 0
    for logq, target in scored_logprobs(engine, ids, options):
        n = len(target)
        rows = slice(row, row + n)
        if not np.isfinite(logq).all():
            result.failures.append("artifact logits contain NaN/inf")
            logq = np.nan_to_num(logq, nan=-1e9, posinf=0.0, neginf=-1e9)
        kld.append(kld_full(ref["logp_u16"][rows], ref["scale"][rows], ref["offset"][rows], logq))
        agree.append(np.argmax(logq, axis=-1) == ref["top_idx"][rows])
        logq_t.append(logq[np.arange(n), target])
        row += n
    kld_all, logq_all = np.concatenate(kld), np.concatenate(logq_t)
    base_t = ref["target_logp"].astype(np.float64)
    result.tokens_scored = int(len(kld_all))
    result.ppl = round(float(np.exp(-logq_all.mean())), 4)
    result.base_ppl = round(float(np.exp(-base_t.mean())), 4)
    result.ppl_ratio = round(result.ppl / result.base_ppl, 4)
    result.kld_mean = round(float(kld_all.mean()), 5)
    result.kld_median = round(float(np.median(kld_all)), 5)
    for name, pct in (("kld_p90", 90), ("kld_p95", 95), ("kld_p99", 99), ("kld_p999", 99.9)):
        setattr(result, name, round(float(np.percentile(kld_all, pct)), 5))  # linear, as llama-perplexity
    result.kld_max = round(float(kld_all.max()), 5)
    result.top1_agreement = round(float(np.concatenate(agree).mean()), 4)
    result.rms_dp = round(float(np.sqrt(np.mean((np.exp(logq_all) - np.exp(base_t)) ** 2))), 5)
    result.seconds = round(time.perf_counter() - started, 2)
    return result
