"""The runtime side of ``quantkit.quantization.verify``: a standalone script, run as a file with ``python -I``,
that never imports quantkit. It loads the artifact as a user would (plain transformers
``AutoModelForCausalLM.from_pretrained(folder)``, or ``llama_cpp.Llama`` for each GGUF file) and
compares it with the base, teacher forced on the same token ids (the base's side cached by the caller's
key, so a second artifact of the same base loads only itself).

Input: one argument, a JSON spec (base, artifact, text file, tokens, threads, device).
Output: one JSON line on stdout, {"results": ...} or {"error": ..., "hint": ...}.
One model is in memory at a time: the base's log-probabilities are computed first, then freed.
"""

import gc
import json
import os
import sys
import time

TOP_K = 64  # base log-probs kept per position (KL over them plus one bucket for the rest)


def log_softmax(logits):
    import numpy as np

    x = np.asarray(logits, dtype=np.float32)
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def base_side(spec: dict) -> dict:
    """The base's token ids of the text, and per position its top-k log-probabilities and that of
    the next token: read from ``spec["cache"]`` when an earlier check stored them (the GGUF check
    then needs neither torch nor transformers), else computed by loading the base, then freed."""
    import numpy as np

    cache = spec.get("cache")
    if cache and os.path.isfile(cache):
        with np.load(cache) as data:
            return {
                "text": read_text(spec),
                "text_ids": data["text_ids"].tolist(),
                "ids": data["ids"].tolist(),
                "top_idx": data["top_idx"],
                "top_logp": data["top_logp"],
                "target_logp": data["target_logp"],
                "cached": True,
            }
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(spec["threads"])
    trust = spec.get("trust_remote_code", False)
    tokenizer = AutoTokenizer.from_pretrained(spec["base"], trust_remote_code=trust)
    text = read_text(spec)
    text_ids = tokenizer.encode(text, add_special_tokens=False)
    ids = tokenizer(text, add_special_tokens=True)["input_ids"][: spec["tokens"]]
    model = AutoModelForCausalLM.from_pretrained(
        spec["base"], dtype=base_dtype(spec, torch), device_map=side_device(spec, "base"), trust_remote_code=trust
    )
    with torch.inference_mode():
        logits = model(input_ids=torch.tensor([ids], device=model.device), use_cache=False).logits[0, :-1]
        logp = log_softmax(logits.float().cpu().numpy())
    del model, logits
    gc.collect()
    ref = reference(text_ids, ids, logp)
    if cache:
        partial = f"{cache}.{os.getpid()}.partial.npz"
        np.savez(partial, **ref)
        os.replace(partial, cache)  # never half an entry
    return {**ref, "text": text, "text_ids": text_ids, "ids": ids, "cached": False}


def reference(text_ids: list[int], ids: list[int], logp) -> dict:
    """What is kept of the base: its ids, and per next-token position (``logp`` holds one row per
    position but the last) the top-k tokens, their log-probs and the log-prob of the true next token."""
    import numpy as np

    k = min(TOP_K, logp.shape[-1])
    idx = np.argpartition(-logp, k - 1, axis=-1)[:, :k]
    vals = np.take_along_axis(logp, idx, axis=-1)
    order = np.argsort(-vals, axis=-1)  # column 0: the base's top token
    return {
        "text_ids": np.asarray(text_ids, dtype=np.int64),
        "ids": np.asarray(ids, dtype=np.int64),
        "top_idx": np.take_along_axis(idx, order, axis=-1).astype(np.int64),
        "top_logp": np.take_along_axis(vals, order, axis=-1).astype(np.float32),
        "target_logp": logp[np.arange(len(ids) - 1), np.asarray(ids[1:])].astype(np.float32),
    }


def read_text(spec: dict) -> str:
    with open(spec["text"], encoding="utf-8") as fh:
        return fh.read()


def side_device(spec: dict, side: str) -> str:
    """Where the caller placed the base or the artifact (each goes to the GPU only where it fits)."""
    return spec.get(f"{side}_device") or spec["device"]


def base_dtype(spec: dict, torch):
    """float32 on a CPU (bf16/fp16 matmuls are slow there) unless the checkpoint is large."""
    if side_device(spec, "base") != "cpu":
        return "auto"
    size = sum(os.path.getsize(os.path.join(spec["base"], f)) for f in os.listdir(spec["base"]) if f.endswith(".safetensors"))
    return torch.float32 if size < 8 * 2**30 else "auto"


def transformers_side(spec: dict, base: dict) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(spec["threads"])
    started = time.perf_counter()
    folder, trust = spec["artifact"]["path"], spec.get("trust_remote_code", False)
    tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=trust)
    ids = tokenizer.encode(base["text"], add_special_tokens=False)
    with_special = tokenizer(base["text"], add_special_tokens=True)["input_ids"][: spec["tokens"]]
    device = side_device(spec, "artifact")
    kwargs = {"device_map": device} if device != "cpu" else {}
    model = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=trust, **kwargs)
    loaded = time.perf_counter()
    with torch.inference_mode():
        logits = model(input_ids=torch.tensor([base["ids"]], device=model.device), use_cache=False).logits[0]
        logits = logits.float().cpu().numpy()
    del model
    gc.collect()
    result = compare(base, logits, parity(base, ids, with_special))
    result["chat_template"] = template_digest(getattr(tokenizer, "chat_template", None))
    result.update(runtime="transformers", load_s=round(loaded - started, 2), seconds=round(time.perf_counter() - started, 2))
    return result


def llama_cpp_side(spec: dict, base: dict, path: str) -> dict:
    import llama_cpp
    import numpy as np

    started = time.perf_counter()
    n = len(base["ids"])
    llm = llama_cpp.Llama(
        model_path=path,
        n_ctx=max(512, n + 8),
        n_batch=512,
        n_threads=spec["threads"],
        n_threads_batch=spec["threads"],
        n_gpu_layers=0,
        logits_all=True,
        seed=0,
        verbose=False,
    )
    try:
        loaded = time.perf_counter()
        data = base["text"].encode("utf-8")
        # special=True: control tokens written in the text stay single ids, as the HF tokenizer does.
        ids = llm.tokenize(data, add_bos=False, special=True)
        with_bos = llm.tokenize(data, add_bos=True, special=True)[: spec["tokens"]]
        llm.eval(base["ids"])
        logits = np.array(llm.scores[:n], dtype=np.float32)
        template = llm.metadata.get("tokenizer.chat_template")
    finally:
        llm.close()
    result = compare(base, logits, parity(base, ids, with_bos))
    result["chat_template"] = template_digest(template)
    result.update(
        runtime="llama.cpp",
        file=os.path.basename(path),
        load_s=round(loaded - started, 2),
        seconds=round(time.perf_counter() - started, 2),
    )
    return result


def template_digest(template) -> str | None:
    """A short sha256 of the default chat template the runtime sees (named templates: "default"),
    so the caller can compare it with the base's without the text in the manifest."""
    import hashlib

    if isinstance(template, list):  # tokenizer_config.json's [{"name", "template"}] form
        template = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
    if isinstance(template, dict):
        template = template.get("default")
    if not isinstance(template, str) or not template.strip():
        return None
    return hashlib.sha256(template.strip().encode()).hexdigest()[:16]


def parity(base: dict, ids: list[int], with_special: list[int]) -> dict:
    """Whether the artifact's tokenizer reads the text as the base's does (plain, and with the
    special tokens each adds, BOS for example); the first differing position when not."""
    for theirs, ours in ((list(base["text_ids"]), list(ids)), (list(base["ids"]), list(with_special))):
        if theirs != ours:
            at = next((i for i, (a, b) in enumerate(zip(theirs, ours)) if a != b), min(len(theirs), len(ours)))
            return {
                "tokenizer_parity": False,
                "first_difference": at,
                "base_ids": theirs[at : at + 4],
                "artifact_ids": ours[at : at + 4],
            }
    return {"tokenizer_parity": True}


def compare(base: dict, logits, record: dict) -> dict:
    """Finite logits, same top token share, KL(base || artifact) over the base's top-k plus one
    bucket for the rest (a close lower bound, as llama-perplexity's KL mode stores), and the
    perplexity ratio, over every next-token position of the base's ids."""
    import numpy as np

    logits = np.asarray(logits, dtype=np.float32)[: len(base["target_logp"])]
    finite = bool(np.isfinite(logits).all())
    record.update(tokens=int(len(logits)), finite=finite)
    if not finite:
        return record
    top_idx, top_logp = base["top_idx"], base["top_logp"].astype(np.float64)
    need = int(top_idx.max()) + 1
    if logits.shape[-1] < need:  # a smaller vocabulary: its missing tokens get ~0 probability
        logits = np.pad(logits, ((0, 0), (0, need - logits.shape[-1])), constant_values=-1e9)
    logq = log_softmax(logits).astype(np.float64)
    logq_k = np.take_along_axis(logq, top_idx, axis=-1)
    p_k = np.exp(top_logp)
    kld = (p_k * (top_logp - logq_k)).sum(-1)
    rest_p = np.clip(1 - p_k.sum(-1), 0, 1)
    rest_q = np.clip(1 - np.exp(logq_k).sum(-1), 1e-12, 1)
    kld += np.where(rest_p > 1e-12, rest_p * (np.log(np.maximum(rest_p, 1e-12)) - np.log(rest_q)), 0)
    target = np.asarray(base["ids"][1 : len(logits) + 1])
    nll_q = -logq[np.arange(len(target)), target].mean()
    nll_p = -base["target_logp"].astype(np.float64).mean()
    record.update(
        top1=round(float((logq.argmax(-1) == top_idx[:, 0]).mean()), 4),
        kld_mean=round(float(np.maximum(kld, 0).mean()), 5),
        ppl=round(float(np.exp(nll_q)), 4),
        base_ppl=round(float(np.exp(nll_p)), 4),
        ppl_ratio=round(float(np.exp(nll_q - nll_p)), 4),
    )
    return record


def quiet() -> None:
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)  # int8 warns on every matmul on CPU
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def main(argv: list[str]) -> int:
    spec = json.loads(argv[0])
    started = time.perf_counter()
    try:
        quiet()
        base = base_side(spec)
        base_s = round(time.perf_counter() - started, 2)
        artifact = spec["artifact"]
        if artifact["runtime"] == "llama.cpp":
            results = {label: llama_cpp_side(spec, base, path) for label, path in artifact["files"].items()}
        else:
            results = {artifact["label"]: transformers_side(spec, base)}
    except Exception as exc:  # the runtime's own refusal, kept to one line for the caller
        reason = " ".join(f"{type(exc).__name__}: {exc}".split())[:500]
        print(json.dumps({"error": reason}))
        return 1
    print(
        json.dumps(
            {
                "results": results,
                "base_s": base_s,
                "base_cached": base["cached"],
                "seconds": round(time.perf_counter() - started, 2),
                "quantkit_imported": any(m == "quantkit" or m.startswith("quantkit.") for m in sys.modules),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
