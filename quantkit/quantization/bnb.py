"""bitsandbytes methods: ``nf4`` (4-bit NF4/FP4, double quantization on by default) and ``int8``
(LLM.int8 with an outlier threshold). transformers quantizes while loading and ``save_pretrained``
writes the bitsandbytes state (absmax, quant maps, SCB) into safetensors together with a
``quantization_config`` in config.json, so plain ``AutoModelForCausalLM.from_pretrained(folder)``
reloads the artifact without quantkit.

Settings: ``Nf4Options`` and ``Int8Options`` below.
"""

import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path

from quantkit.core import preflight
from quantkit.core.atomic import PARTIAL_MARK
from quantkit.core.errors import QuantizeError, missing_extra
from quantkit.core.estimate import Footprint
from quantkit.quantization.base import FormatFacts, MethodResult, copy_support_files
from quantkit.quantization.options import TransformersOptions, option


@dataclass
class Nf4Options(TransformersOptions):
    bits: int = option(4, "Weight bits.", choices=(4,))
    quant_type: str = option("nf4", "bitsandbytes 4-bit type.", choices=("nf4", "fp4"))
    double_quant: bool = option(True, "bitsandbytes 4-bit double quantization (the scales quantized too).")


@dataclass
class Int8Options(TransformersOptions):
    bits: int = option(8, "Weight bits.", choices=(8,))
    int8_threshold: float = option(6.0, "LLM.int8 outlier threshold (activations above it stay in 16 bits).", minimum=0.0)


def quiet_bitsandbytes() -> None:
    """bitsandbytes warns once per matmul on CPU (int8 casts its inputs to fp16) and once at
    import about an optional kernels package; neither is actionable, so only errors get through."""
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)


def final_name(out_dir: Path) -> str:
    """The artifact's folder name as the user will see it (``out_dir`` is the staging folder)."""
    return out_dir.name.split(PARTIAL_MARK)[0].lstrip(".") or out_dir.name


class BnbMethod:
    """What NF4 and int8 share; subclasses give the BitsAndBytesConfig and the settings."""

    name = "bnb"
    extra = "bnb"
    # transformers only: vLLM 0.32 refuses it ("Unknown quantization method: bitsandbytes", issue 26).
    formats = {"bitsandbytes": FormatFacts("transformers", ("bitsandbytes",), ("transformers",), "bitsandbytes")}
    layer_type = ""  # the bitsandbytes module class that replaces nn.Linear
    disk_bits = 16.0  # bits per quantized weight on disk, absmax/statistics included

    def supports(self, config: dict) -> str | None:
        from quantkit.quantization.support import bnb_reason

        return bnb_reason(config)

    def check_config(self, config: dict, options) -> None:
        """Nothing in config.json decides more than ``supports`` does."""

    def footprint(self, options) -> Footprint:
        return Footprint("load", (self.disk_bits,), dtype=options.dtype)

    def check(self, model_dir: Path, config: dict, options) -> None:
        if importlib.util.find_spec("bitsandbytes") is None:
            raise missing_extra("bitsandbytes", self.extra)
        preflight.require_trusted_code(config, options.trust_remote_code)
        preflight.resolve_device(options.device)
        preflight.check_quantize_memory(config, self.name, self.footprint(options), options)  # on a GPU: the quantized size there

    def quant_config(self, options, device: str):
        raise NotImplementedError

    def settings(self, options, device: str) -> dict:
        raise NotImplementedError

    def usage(self, name: str) -> str:
        return f"""Plain transformers reloads it (bitsandbytes installed; no quantization config needed):

```python
from transformers import AutoModelForCausalLM, AutoTokenizer

model = AutoModelForCausalLM.from_pretrained("{name}", device_map="auto")
tokenizer = AutoTokenizer.from_pretrained("{name}")
messages = [{{"role": "user", "content": "What is the capital of France?"}}]
inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
print(tokenizer.decode(model.generate(**inputs, max_new_tokens=32)[0]))
```
"""

    def quantize(self, model_dir: Path, out_dir: Path, options) -> MethodResult:
        quiet_bitsandbytes()
        import torch

        from quantkit.quantization.llmc import free_accelerator_memory
        from quantkit.quantization.pread_load import from_pretrained_pread

        device = preflight.resolve_device(options.device)
        dtype = getattr(torch, options.dtype) if options.dtype and options.dtype != "auto" else "auto"
        try:
            model = from_pretrained_pread(  # no mapped file pages held beside the quantized model
                model_dir,
                quantization_config=self.quant_config(options, device),
                device_map=device,
                dtype=dtype,
                trust_remote_code=options.trust_remote_code,
            )
            model.save_pretrained(out_dir)
        except (RuntimeError, ValueError, OSError) as exc:
            raise QuantizeError(f"bitsandbytes {self.name} failed: {exc}") from exc
        copy_support_files(model_dir, out_dir)
        for path in out_dir.iterdir():
            if path.is_file():
                path.chmod(0o644)  # save_pretrained writes weights through a private temp file
        layers = sum(type(m).__name__ == self.layer_type for m in model.modules())
        if layers == 0:
            raise QuantizeError(f"bitsandbytes {self.name} quantized no layer of {model_dir}")
        settings = self.settings(options, device)
        settings["dtype"] = str(model.dtype).replace("torch.", "")  # of the unquantized tensors
        quantizer = getattr(model, "hf_quantizer", None)  # knows the default skips (lm_head) too
        settings["skipped_modules"] = sorted(set(getattr(quantizer, "modules_to_not_convert", None) or []))
        # Free it now: its 4-bit weights reference their modules (a cycle only gc breaks), and the
        # verification child loads the base next, on the same GPU.
        del model, quantizer
        free_accelerator_memory()
        return MethodResult(
            format="bitsandbytes",
            engine="transformers",
            settings=settings,
            extra={"quantized_layers": layers, "layer_type": self.layer_type},
            usage=self.usage(final_name(out_dir)),
        )

    def skip_modules(self, options) -> list[str] | None:
        """--ignore patterns (``re:`` prefix allowed; transformers matches them as regexes or
        name suffixes). Passing any replaces transformers' default skips, so keep lm_head."""
        if not options.ignore:
            return None
        return ["lm_head", *(p.removeprefix("re:") for p in options.ignore)]


class Nf4Method(BnbMethod):
    name = "nf4"
    Options = Nf4Options
    summary = "bitsandbytes 4-bit NF4/FP4, double quant (transformers)"
    label = "NF4"
    tags = ("nf4",)
    layer_type = "Linear4bit"
    disk_bits = 4.5

    def compute_dtype(self, device: str) -> str:
        # fp32 compute is faster than bf16 on CPUs without native bf16; bf16 is the GPU default.
        return "bfloat16" if device == "cuda" else "float32"

    def quant_config(self, options, device):
        import torch
        from transformers import BitsAndBytesConfig

        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type=options.quant_type,
            bnb_4bit_use_double_quant=options.double_quant,
            bnb_4bit_compute_dtype=getattr(torch, self.compute_dtype(device)),
            llm_int8_skip_modules=self.skip_modules(options),
        )

    def settings(self, options, device):
        return {
            "bits": 4,
            "quant_type": options.quant_type,
            "double_quant": options.double_quant,
            "compute_dtype": self.compute_dtype(device),
            "blocksize": 64,
            "device": device,
        }

    def usage(self, name):
        return (
            super().usage(name)
            + """
vLLM (0.32) does not load it ("Unknown quantization method: bitsandbytes"); for vLLM quantize
with awq, gptq, w8a8 or fp8 instead.
"""
        )


class Int8Method(BnbMethod):
    name = "int8"
    Options = Int8Options
    summary = "bitsandbytes LLM.int8() (transformers)"
    label = "INT8"
    tags = ("int8",)
    layer_type = "Linear8bitLt"
    disk_bits = 8.1

    def quant_config(self, options, device):
        from transformers import BitsAndBytesConfig

        return BitsAndBytesConfig(
            load_in_8bit=True, llm_int8_threshold=options.int8_threshold, llm_int8_skip_modules=self.skip_modules(options)
        )

    def settings(self, options, device):
        return {"bits": 8, "int8_threshold": options.int8_threshold, "device": device}

    def usage(self, name):
        return (
            super().usage(name)
            + """
On CPU bitsandbytes logs a cast warning on every int8 matmul unless the rest of the model is
float16; `logging.getLogger("bitsandbytes").setLevel(logging.ERROR)` silences it.
"""
        )
