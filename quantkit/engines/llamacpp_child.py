"""llama.cpp's load recipe for verification's fresh process (quantkit/quantization/verify_runtime.py
runs it by file path): ``llama_cpp.Llama`` on one GGUF file, on the CPU, as a user loads it.
Standalone: it never imports quantkit."""

import time


def load(spec: dict, target: str, device: str, text: str, ids: list[int]) -> dict:
    """The file's token ids of ``text`` (plain, and with BOS), its logits at ``ids`` (the base's)
    and its chat template."""
    import llama_cpp
    import numpy as np

    started = time.perf_counter()
    n = len(ids)
    llm = llama_cpp.Llama(
        model_path=target,
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
        data = text.encode("utf-8")
        # special=True: control tokens written in the text stay single ids, as the HF tokenizer does.
        text_ids = llm.tokenize(data, add_bos=False, special=True)
        with_bos = llm.tokenize(data, add_bos=True, special=True)
        llm.eval(ids)
        logits = np.array(llm.scores[:n], dtype=np.float32)
        template = llm.metadata.get("tokenizer.chat_template")
    finally:
        llm.close()
    return {
        "text_ids": text_ids,
        "with_special": with_bos,
        "logits": logits,
        "chat_template": template,
        "load_s": round(loaded - started, 2),
    }
