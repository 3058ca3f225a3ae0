"""``--format autoawq``: the classic AWQ GEMM layout (``qweight``/``qzeros``/``scales`` int32-packed,
``quant_method: awq``, ``version: gemm``) that AutoAWQ wrote and older vLLM/lmdeploy/TGI load.

AutoAWQ itself is archived and does not run with transformers 5; gptqmodel 7.6 writes the same
layout and its AWQ_TORCH backend runs on CPU (in bf16 only). gptqmodel 7.7 needs torch >= 2.14.1.
"""

import importlib.util
import json
import os
import re
from pathlib import Path

from quantkit.errors import DependencyError, PreflightError, QuantizeError, missing_extra
from quantkit.methods.base import MethodResult, QuantizeOptions

EXTRA = "autoawq"


def check_dependencies(options: QuantizeOptions) -> None:
    if importlib.util.find_spec("gptqmodel") is None:
        raise missing_extra("gptqmodel", EXTRA)
    if options.dtype == "float32":
        raise PreflightError("--format autoawq cannot calibrate in float32 (gptqmodel's AWQ rejects it)",
                             hint="drop --dtype or use --dtype bfloat16 / float16")


def gptqmodel_pattern(pattern: str) -> str:
    """An --ignore pattern as a gptqmodel negative 'dynamic' rule ('-:REGEX' skips the module)."""
    if pattern.startswith("re:"):
        return f"-:{pattern[3:]}"
    return rf"-:(.*\.)?{re.escape(pattern)}$"


def quantize_autoawq(model_dir: Path, out_dir: Path, options: QuantizeOptions, group: int) -> MethodResult:
    from quantkit.methods.awq import (calibration_set, finish_folder, is_ignored, resolve_device,
                                      settings_record)

    # gptqmodel starts one packing worker per core by default; more than the cores only thrash.
    os.environ.setdefault("GPTQMODEL_CPU_WORKERS", str(min(2, os.cpu_count() or 1)))
    try:
        import torch
        from gptqmodel import BACKEND, AWQConfig, GPTQModel
        from transformers import AutoTokenizer
    except ImportError as exc:
        raise DependencyError(f"gptqmodel cannot be imported: {exc}", hint=f"pip install 'quantkit[{EXTRA}]'") from exc
    # gptqmodel writes per-layer logs to ./logs in the user's working folder; keep them in our cache.
    from gptqmodel.looper import loop_processor

    from quantkit.paths import cache_dir

    loop_processor._PROJECT_LOG_DIR = cache_dir("logs", "gptqmodel")

    device = resolve_device(options)
    dtype = options.dtype if options.dtype in ("float16", "bfloat16") else "bfloat16"
    trust = options.trust_remote_code
    tokenizer = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=trust)
    calib = calibration_set(model_dir, options, tokenizer)
    data = []
    for text in calib.samples:  # tokenized here so every sample is cut at the same seq_len
        ids = tokenizer(text, truncation=True, max_length=calib.seq_len)["input_ids"]
        data.append({"input_ids": ids, "attention_mask": [1] * len(ids)})
    dynamic = {gptqmodel_pattern(p): {} for p in options.ignore} or None
    config = AWQConfig(bits=4, group_size=group, sym=False, dynamic=dynamic)
    try:
        model = GPTQModel.load(str(model_dir), config, dtype=getattr(torch, dtype), device=device,
                               trust_remote_code=trust)
        skipped = [name for name, module in model.model.named_modules()
                   if isinstance(module, torch.nn.Linear) and is_ignored(name, options.ignore)]
        backend = BACKEND.AWQ_TORCH if device == "cpu" else BACKEND.AUTO
        model.quantize(data, batch_size=1, backend=backend, tokenizer=tokenizer)
        model.save(str(out_dir))
    except (RuntimeError, ValueError, TypeError, KeyError, AttributeError, NotImplementedError) as exc:
        raise QuantizeError(f"gptqmodel AWQ failed: {exc}") from exc
    tokenizer.save_pretrained(out_dir)
    mark_unconverted(out_dir, skipped)
    finish_folder(model_dir, out_dir)
    return MethodResult(
        format="autoawq", engine="transformers",
        settings={**settings_record(options, group, "autoawq", device, dtype, dtype), "version": "gemm"},
        extra={"calibration": calib.record()},
        usage=USAGE_AUTOAWQ,
    )


def mark_unconverted(out_dir: Path, skipped: list[str]) -> None:
    """transformers and vLLM read AutoAWQ's ``modules_to_not_convert``, not gptqmodel's 'dynamic'
    rules: without it they build 4-bit layers for the ignored modules and load garbage."""
    path = Path(out_dir) / "config.json"
    config = json.loads(path.read_text())
    qc = config["quantization_config"]
    qc["modules_to_not_convert"] = sorted(set(qc.get("modules_to_not_convert") or []) | set(skipped)) or None
    qc.get("meta", {}).pop("offload_to_disk_path", None)  # a temp folder of this run, meaningless later
    path.write_text(json.dumps(config, indent=2) + "\n")
    from safetensors import safe_open

    keys = set()
    for shard in Path(out_dir).glob("*.safetensors"):
        with safe_open(shard, "pt") as fh:
            keys |= set(fh.keys())
    still_quantized = [name for name in skipped if f"{name}.qweight" in keys]
    if still_quantized:
        raise QuantizeError(f"gptqmodel quantized modules that --ignore names: {still_quantized[:3]}")


USAGE_AUTOAWQ = """\
Weights are 4-bit AWQ in the classic AutoAWQ GEMM layout (`qweight`/`qzeros`/`scales`).

```python
# transformers >= 5 loads it with gptqmodel installed (pip install gptqmodel)
from transformers import AutoModelForCausalLM, AutoTokenizer
model = AutoModelForCausalLM.from_pretrained("PATH")
tokenizer = AutoTokenizer.from_pretrained("PATH")
```

vLLM: `vllm serve PATH --quantization awq`
"""
