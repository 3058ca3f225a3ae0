"""Quality against the base model, teacher forced on the same token ids (llama-perplexity's KL
mode): perplexity of each, PPL ratio, mean/median/p99 KL divergence, "same top token" share and
RMS of the change in the correct token's probability.

The base model's side is computed once per (base weights, text, settings) and cached under the
quantkit cache as compressed top-k log-probabilities (k=64) plus the exact log-probability of the
correct token. KL is then computed over those k tokens with the remaining probability mass of each
model lumped into one bucket: a close lower bound of the full KL (exact when the top-k holds all
the mass), as llama.cpp's own KL cache also stores only a compressed distribution."""

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np

from quantkit.errors import InputError
from quantkit.paths import cache_dir

CACHE_VERSION = 1


@dataclass
class QualityOptions:
    max_tokens: int = 1024  # evaluation tokens taken from the text (chunks of ``ctx``)
    ctx: int = 512  # chunk length; the second half of each chunk is scored (as llama-perplexity)
    top_k: int = 64  # base log-probs kept in the cache
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
    kld_p99: float | None = None
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
    return [ids[s:s + ctx] for s in range(0, len(ids) - ctx + 1, ctx)]


def log_softmax(logits: np.ndarray) -> np.ndarray:
    x = logits.astype(np.float32, copy=True)
    x -= x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def scored_logprobs(engine, ids: list[int], options: QualityOptions):
    """For every scored position: (log-probs over the vocab, the correct next token), per chunk."""
    for chunk in chunks(ids, options.ctx):
        first = len(chunk) // 2
        logp = log_softmax(engine.logits(chunk)[first:-1])
        yield logp, np.asarray(chunk[first + 1:])


def weights_identity(path: Path) -> list:
    """Cheap identity of a model's weights for the cache key: names, sizes, mtimes."""
    path = Path(path)
    files = [path] if path.is_file() else sorted(p for p in path.iterdir() if p.is_file())
    return [[p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in files
            if p.suffix in (".safetensors", ".gguf", ".bin", ".json", ".jinja")]


def reference_key(base: Path, text: str, options: QualityOptions, engine_name: str) -> str:
    blob = json.dumps([CACHE_VERSION, str(Path(base).resolve()), weights_identity(base), engine_name,
                       hashlib.sha256(text.encode()).hexdigest(), options.max_tokens, options.ctx, options.top_k])
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def base_reference(base: Path, options: QualityOptions, engine_options=None) -> tuple[dict, bool]:
    """The base model's ids, top-k log-probs and correct-token log-probs: cached, or computed by
    loading the base (then freed). Returns (reference, was_cached)."""
    from quantkit.engines import engine_for, load_engine

    text = eval_text(options)
    name = engine_for(base)
    file = cache_dir("base-logits") / f"{reference_key(base, text, options, name)}.npz"
    if file.is_file():
        with np.load(file) as data:
            return {k: data[k] for k in data.files}, True
    engine = load_engine(base, engine_options)
    try:
        ids = engine.tokenize(text)[: options.max_tokens]
        if len(ids) < 8:
            raise InputError("the evaluation text is too short", hint="give at least a few hundred tokens")
        top_idx, top_logp, target_logp = [], [], []
        for logp, target in scored_logprobs(engine, ids, options):
            idx = np.argpartition(-logp, options.top_k - 1, axis=-1)[:, : options.top_k]
            vals = np.take_along_axis(logp, idx, axis=-1)
            order = np.argsort(-vals, axis=-1)  # column 0 is the top token
            top_idx.append(np.take_along_axis(idx, order, axis=-1).astype(np.int32))
            top_logp.append(np.take_along_axis(vals, order, axis=-1).astype(np.float32))
            target_logp.append(logp[np.arange(len(target)), target])
    finally:
        engine.close()
    ref = {"ids": np.asarray(ids, dtype=np.int32), "top_idx": np.concatenate(top_idx),
           "top_logp": np.concatenate(top_logp), "target_logp": np.concatenate(target_logp)}
    partial = file.with_name(f".{file.stem}.{os.getpid()}.npz")
    np.savez_compressed(partial, **ref)
    os.replace(partial, file)  # never leave a half-written cache entry
    return ref, False


def kld_topk(ref_idx: np.ndarray, ref_logp: np.ndarray, logq: np.ndarray) -> np.ndarray:
    """KL(base || artifact) per position over the base's top-k plus one bucket for the rest."""
    logq_k = np.take_along_axis(logq, ref_idx.astype(np.int64), axis=-1)
    p_k = np.exp(ref_logp.astype(np.float64))
    kl = (p_k * (ref_logp - logq_k)).sum(axis=-1)
    rest_p = np.clip(1.0 - p_k.sum(axis=-1), 0.0, 1.0)
    rest_q = np.clip(1.0 - np.exp(logq_k).sum(axis=-1), 1e-12, 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        kl += np.where(rest_p > 1e-12, rest_p * (np.log(np.maximum(rest_p, 1e-12)) - np.log(rest_q)), 0.0)
    return np.maximum(kl, 0.0)


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
        result.failures.append(f"tokenizer differs from the base's (first difference at token {same}): "
                               "the artifact does not read text as its base does")
        result.seconds = round(time.perf_counter() - started, 2)
        return result
    kld, agree, logq_t = [], [], []
    row = 0
    for logq, target in scored_logprobs(engine, ids, options):
        n = len(target)
        ref_idx, ref_logp = ref["top_idx"][row:row + n], ref["top_logp"][row:row + n]
        if not np.isfinite(logq).all():
            result.failures.append("artifact logits contain NaN/inf")
            logq = np.nan_to_num(logq, nan=-1e9, posinf=0.0, neginf=-1e9)
        if logq.shape[-1] <= int(ref_idx.max()):  # a smaller vocab: its missing tokens get ~0 probability
            logq = np.pad(logq, ((0, 0), (0, int(ref_idx.max()) + 1 - logq.shape[-1])), constant_values=-1e9)
        kld.append(kld_topk(ref_idx, ref_logp, logq))
        agree.append(np.argmax(logq, axis=-1) == ref_idx[:, 0])
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
    result.kld_p99 = round(float(np.percentile(kld_all, 99)), 5)
    result.top1_agreement = round(float(np.concatenate(agree).mean()), 4)
    result.rms_dp = round(float(np.sqrt(np.mean((np.exp(logq_all) - np.exp(base_t)) ** 2))), 5)
    result.seconds = round(time.perf_counter() - started, 2)
    return result
