"""The fake engine's load recipe for verification's fresh process (run by file path; never imports
quantkit): the same contract as quantkit/engines/hf_child.py, written out on its own."""

import time


def load(spec: dict, target: str, device: str, text: str, ids: list[int]) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    started = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(target)
    model = AutoModelForCausalLM.from_pretrained(target)
    loaded = time.perf_counter()
    with torch.inference_mode():
        logits = model(input_ids=torch.tensor([ids]), use_cache=False).logits[0].float().numpy()
    return {
        "text_ids": tokenizer.encode(text, add_special_tokens=False),
        "with_special": tokenizer(text, add_special_tokens=True)["input_ids"],
        "logits": logits,
        "chat_template": getattr(tokenizer, "chat_template", None),
        "load_s": round(loaded - started, 2),
    }
