"""transformers' load recipe for verification's fresh process (quantkit/quantization/verify_runtime.py
runs it by file path): plain ``AutoModelForCausalLM.from_pretrained(folder)``, as a user loads the
artifact. Standalone: it never imports quantkit."""

import gc
import time


def load(spec: dict, target: str, device: str, text: str, ids: list[int]) -> dict:
    """The artifact's token ids of ``text`` (plain, and with its special tokens), its logits at
    ``ids`` (the base's) and its chat template."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(spec["threads"])
    started = time.perf_counter()
    trust = spec.get("trust_remote_code", False)
    tokenizer = AutoTokenizer.from_pretrained(target, trust_remote_code=trust)
    text_ids = tokenizer.encode(text, add_special_tokens=False)
    with_special = tokenizer(text, add_special_tokens=True)["input_ids"]
    kwargs = {"device_map": device} if device != "cpu" else {}
    model = AutoModelForCausalLM.from_pretrained(target, trust_remote_code=trust, **kwargs)
    loaded = time.perf_counter()
    with torch.inference_mode():
        logits = model(input_ids=torch.tensor([ids], device=model.device), use_cache=False).logits[0]
        logits = logits.float().cpu().numpy()
    del model
    gc.collect()
    return {
        "text_ids": text_ids,
        "with_special": with_special,
        "logits": logits,
        "chat_template": getattr(tokenizer, "chat_template", None),
        "load_s": round(loaded - started, 2),
    }
