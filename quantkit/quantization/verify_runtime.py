"""The runtime side of ``quantkit.quantization.verify``: a standalone script, run as a file with ``python -I``,
that never imports quantkit. It loads the artifact as a user would, with its engine's own
recipe (quantkit/engines/*_child.py: plain transformers ``AutoModelForCausalLM.from_pretrained(folder)``,
``llama_cpp.Llama`` for each GGUF file), and compares it with the base, teacher forced on the same token ids (the base's side cached by the caller's
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
        spec["base"], dtype="auto", device_map=side_device(spec, "base"), trust_remote_code=trust
    )
    if side_device(spec, "base") == "cpu":
        upcast_module().upcast_per_module(model)  # fp32 logits, the 16-bit weights kept (1x the checkpoint)
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


def upcast_module():
    """quantkit/engines/upcast.py, loaded by its path (this script never imports quantkit)."""
    import importlib.util

    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "engines", "upcast.py")
    spec = importlib.util.spec_from_file_location("quantkit_upcast", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def artifact_side(spec: dict, base: dict, target: str) -> dict:
    """Load ``target`` (the artifact's folder, or one of its files) with the engine's own recipe
    (``spec["artifact"]["child"]``, a standalone file of quantkit/engines, loaded by path so that
    quantkit is never imported) and compare it with the base."""
    import importlib.util

    artifact = spec["artifact"]
    found = importlib.util.spec_from_file_location("verify_child", artifact["child"])
    child = importlib.util.module_from_spec(found)
    found.loader.exec_module(child)
    started = time.perf_counter()
    side = child.load(spec, target, side_device(spec, "artifact"), base["text"], list(base["ids"]))
    result = compare(base, side["logits"], parity(base, side["text_ids"], side["with_special"][: spec["tokens"]]))
    result["chat_template"] = template_digest(side["chat_template"])
    result.update(runtime=artifact["runtime"], load_s=side["load_s"])
    if artifact.get("per_file"):
        result["file"] = os.path.basename(target)
    result["seconds"] = round(time.perf_counter() - started, 2)
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
        results = {label: artifact_side(spec, base, target) for label, target in spec["artifact"]["targets"].items()}
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
