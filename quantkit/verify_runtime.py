"""The runtime side of ``quantkit.verify``: a standalone script, run as a file with ``python -I``,
that never imports quantkit. It loads the artifact as a user would (plain transformers
``AutoModelForCausalLM.from_pretrained(folder)``, or ``llama_cpp.Llama`` for each GGUF file) and
compares it with the base, teacher forced on the same token ids.

Input: one argument, a JSON spec (base, artifact, text file, tokens, threads, device).
Output: one JSON line on stdout, {"results": ...} or {"error": ..., "hint": ...}.
One model is in memory at a time: the base's log-probabilities are computed first, then freed.
"""

import gc
import json
import os
import sys
import time


def log_softmax(torch, logits):
    return torch.log_softmax(logits.float(), dim=-1)


def base_side(spec: dict, torch) -> dict:
    """The base's token ids of the text and its log-probabilities at every position."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    trust = spec.get("trust_remote_code", False)
    tokenizer = AutoTokenizer.from_pretrained(spec["base"], trust_remote_code=trust)
    text = open(spec["text"], encoding="utf-8").read()
    text_ids = tokenizer.encode(text, add_special_tokens=False)
    ids = tokenizer(text, add_special_tokens=True)["input_ids"][: spec["tokens"]]
    model = AutoModelForCausalLM.from_pretrained(spec["base"], dtype=base_dtype(spec, torch),
                                                 device_map=spec["device"], trust_remote_code=trust)
    with torch.inference_mode():
        logits = model(input_ids=torch.tensor([ids], device=model.device), use_cache=False).logits[0]
        logp = log_softmax(torch, logits).cpu()
    del model, logits
    gc.collect()
    return {"text": text, "text_ids": text_ids, "ids": ids, "logp": logp}


def base_dtype(spec: dict, torch):
    """float32 on a CPU (bf16/fp16 matmuls are slow there) unless the checkpoint is large."""
    if spec["device"] != "cpu":
        return "auto"
    size = sum(os.path.getsize(os.path.join(spec["base"], f)) for f in os.listdir(spec["base"])
               if f.endswith(".safetensors"))
    return torch.float32 if size < 8 * 2**30 else "auto"


def transformers_side(spec: dict, base: dict, torch) -> dict:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    started = time.perf_counter()
    folder, trust = spec["artifact"]["path"], spec.get("trust_remote_code", False)
    tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=trust)
    ids = tokenizer.encode(base["text"], add_special_tokens=False)
    with_special = tokenizer(base["text"], add_special_tokens=True)["input_ids"][: spec["tokens"]]
    kwargs = {"device_map": spec["device"]} if spec["device"] != "cpu" else {}
    model = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=trust, **kwargs)
    loaded = time.perf_counter()
    with torch.inference_mode():
        logits = model(input_ids=torch.tensor([base["ids"]], device=model.device), use_cache=False).logits[0]
        logp = log_softmax(torch, logits).cpu()
    del model, logits
    gc.collect()
    result = compare(torch, base, logp, parity(base, ids, with_special))
    result.update(runtime="transformers", load_s=round(loaded - started, 2),
                  seconds=round(time.perf_counter() - started, 2))
    return result


def llama_cpp_side(spec: dict, base: dict, torch, path: str) -> dict:
    import llama_cpp
    import numpy as np

    started = time.perf_counter()
    n = len(base["ids"])
    llm = llama_cpp.Llama(model_path=path, n_ctx=max(512, n + 8), n_batch=512, n_threads=spec["threads"],
                          n_threads_batch=spec["threads"], n_gpu_layers=0, logits_all=True, seed=0, verbose=False)
    try:
        loaded = time.perf_counter()
        data = base["text"].encode("utf-8")
        # special=True: control tokens written in the text stay single ids, as the HF tokenizer does.
        ids = llm.tokenize(data, add_bos=False, special=True)
        with_bos = llm.tokenize(data, add_bos=True, special=True)[: spec["tokens"]]
        llm.eval(base["ids"])
        logits = torch.from_numpy(np.array(llm.scores[:n], dtype=np.float32))
    finally:
        llm.close()
    result = compare(torch, base, log_softmax(torch, logits), parity(base, ids, with_bos))
    result.update(runtime="llama.cpp", file=os.path.basename(path), load_s=round(loaded - started, 2),
                  seconds=round(time.perf_counter() - started, 2))
    return result


def parity(base: dict, ids: list[int], with_special: list[int]) -> dict:
    """Whether the artifact's tokenizer reads the text as the base's does (plain, and with the
    special tokens each adds, BOS for example); the first differing position when not."""
    for theirs, ours in ((base["text_ids"], ids), (base["ids"], with_special)):
        if theirs != ours:
            at = next((i for i, (a, b) in enumerate(zip(theirs, ours)) if a != b), min(len(theirs), len(ours)))
            return {"tokenizer_parity": False, "first_difference": at,
                    "base_ids": theirs[at:at + 4], "artifact_ids": ours[at:at + 4]}
    return {"tokenizer_parity": True}


def compare(torch, base: dict, logq, record: dict) -> dict:
    """Finite logits, same top token share, KL(base || artifact) and the perplexity ratio over
    every next-token position of the base's ids."""
    logp = base["logp"]
    vocab = min(logp.shape[-1], logq.shape[-1])  # a padded vocabulary: compare the common part
    logp, logq = logp[:-1, :vocab], logq[:-1, :vocab]
    finite = bool(torch.isfinite(logq).all())
    target = torch.tensor(base["ids"][1:])
    record.update(tokens=int(logp.shape[0]), finite=finite)
    if not finite:
        return record
    logp, logq = torch.log_softmax(logp, -1), torch.log_softmax(logq, -1)
    kld = (logp.exp() * (logp - logq)).sum(-1).clamp(min=0)
    nll_p, nll_q = -logp.gather(1, target[:, None]).mean(), -logq.gather(1, target[:, None]).mean()
    record.update(top1=round(float((logp.argmax(-1) == logq.argmax(-1)).float().mean()), 4),
                  kld_mean=round(float(kld.mean()), 5), ppl=round(float(nll_q.exp()), 4),
                  base_ppl=round(float(nll_p.exp()), 4), ppl_ratio=round(float((nll_q - nll_p).exp()), 4))
    return record


def quiet() -> None:
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)  # int8 warns on every matmul on CPU
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def main(argv: list[str]) -> int:
    spec = json.loads(argv[0])
    started = time.perf_counter()
    try:
        import torch

        torch.set_num_threads(spec["threads"])
        quiet()
        base = base_side(spec, torch)
        base_s = round(time.perf_counter() - started, 2)
        artifact = spec["artifact"]
        if artifact["runtime"] == "llama.cpp":
            results = {label: llama_cpp_side(spec, base, torch, path) for label, path in artifact["files"].items()}
        else:
            results = {artifact["label"]: transformers_side(spec, base, torch)}
    except Exception as exc:  # the runtime's own refusal, kept to one line for the caller
        reason = " ".join(f"{type(exc).__name__}: {exc}".split())[:500]
        print(json.dumps({"error": reason}))
        return 1
    print(json.dumps({"results": results, "base_s": base_s, "seconds": round(time.perf_counter() - started, 2),
                      "quantkit_imported": any(m == "quantkit" or m.startswith("quantkit.") for m in sys.modules)}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
