"""The transformers engine: any HF folder transformers loads (full precision, compressed-tensors
AWQ, bitsandbytes NF4/int8), driven by a plain forward loop over a KV cache so that prefill,
decode and teacher-forced logits are measured on the same code path."""

import logging
import warnings
from pathlib import Path

from quantkit.core.errors import EngineError, InputError, missing_extra
from quantkit.engines.base import EngineOptions
from quantkit.engines.generate import COMMON_SPECIAL, END_OF_TURN, stream_tokens

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt")


class TransformersEngine:
    name = "transformers"

    def __init__(self, path: Path, options: EngineOptions):
        try:
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer
        except ImportError:
            raise missing_extra("transformers", "all") from None
        self.path = Path(path)
        if not self.path.is_dir():
            raise InputError(f"{self.path} is not a model folder", hint="the transformers engine loads HF folders")
        self.options = options
        self.torch = torch
        self.device = resolve_device(options.device, torch)
        if options.threads:
            torch.set_num_threads(options.threads)
        self.threads = torch.get_num_threads()
        has_safetensors = any(self.path.glob("*.safetensors"))
        if not has_safetensors and not options.allow_pickle:
            raise InputError(
                f"{self.path} has no .safetensors weights",
                hint="pickle weights can run code on load; pass `allow_pickle` if you trust them",
            )
        # bf16/fp16 matmuls are slow on CPUs without native support: compute in float32 there;
        # a 16-bit unquantized checkpoint keeps its own weights and upcasts one module at a time.
        dtype = options.dtype or ("float32" if self.device == "cpu" else "auto")
        upcast = options.dtype is None and self.device == "cpu" and sixteen_bit_dense(self.path)
        if upcast:
            dtype = upcast
        logging.getLogger("bitsandbytes").setLevel(logging.ERROR)  # int8 warns on every matmul
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # callers show their own progress
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(self.path, trust_remote_code=options.trust_remote_code)
            self.model = AutoModelForCausalLM.from_pretrained(
                self.path,
                dtype=dtype if dtype == "auto" else getattr(torch, dtype),
                device_map=self.device,
                trust_remote_code=options.trust_remote_code,
                use_safetensors=has_safetensors or None,
            )
        except (OSError, ValueError, RuntimeError) as exc:
            raise EngineError(f"transformers could not load {self.path}: {exc}") from exc
        self.model.eval()
        if upcast:
            from quantkit.engines.upcast import upcast_per_module

            upcast_per_module(self.model)
        self.eos_ids = self._eos_ids()
        self.special_tokens = set(self.tokenizer.all_special_tokens) | COMMON_SPECIAL
        self.special_tokens |= {
            t.content for t in getattr(self.tokenizer, "added_tokens_decoder", {}).values() if getattr(t, "special", False)
        }
        self.n_params = count_parameters(self.model) or None
        self.n_vocab = self.model.get_input_embeddings().weight.shape[0]  # rows of the embedding: valid ids
        self.weights_bytes = sum(p.stat().st_size for p in self.path.iterdir() if p.suffix in WEIGHT_SUFFIXES)
        # compressed-tensors (AWQ pack-quantized) decompresses every layer to dense weights on the
        # first forward: it then runs, and reads per token, as the dense model does.
        self.dequantized = quant_method(self.model.config) == "compressed-tensors"
        self._cache = None
        self.warnings = []

    @property
    def runtime_bytes(self) -> int:
        """Bytes of weights the model holds where it runs (dense once a compressed-tensors model
        has decompressed; before its first forward, its dense size in the compute dtype)."""
        if self.dequantized and any(n.endswith("weight_packed") for n, _ in self.model.named_parameters()):
            return int(self.n_params or 0) * self.model.dtype.itemsize
        seen, total = set(), 0
        for t in [*self.model.parameters(), *self.model.buffers()]:
            if t.data_ptr() not in seen:
                seen.add(t.data_ptr())
                total += t.numel() * t.element_size()
        return total

    def _eos_ids(self) -> set[int]:
        ids: set[int] = set()
        for source in (self.model.config, getattr(self.model, "generation_config", None), self.tokenizer):
            value = getattr(source, "eos_token_id", None) if source is not None else None
            ids |= set(value) if isinstance(value, (list, tuple, set)) else ({value} if value is not None else set())
        vocab = self.tokenizer.get_vocab()
        ids |= {vocab[text] for text in END_OF_TURN if text in vocab}
        return ids

    def tokenize(self, text: str, add_special: bool = False) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=add_special)["input_ids"])

    def detokenize(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=False)

    def chat_prompt(self, messages: list[dict]) -> list[int]:
        if not self.tokenizer.chat_template:
            raise InputError(f"{self.path} has no chat template", hint="add chat_template.jinja to the folder")
        from quantkit.engines.chat_tokens import tokenizer_chat_ids

        return tokenizer_chat_ids(self.tokenizer, messages)

    def batch_decoder(self, n_seq: int, n_ctx_seq: int):
        """``n_seq`` sequences decoded together: one padded forward per step (the serve batch)."""
        from quantkit.engines.hf_batch import TransformersBatch

        return TransformersBatch(self, n_seq, n_ctx_seq)

    def stream(self, prompt_ids, max_tokens, temperature=0.0, top_p=1.0, seed=None, ignore_eos=False):
        return stream_tokens(self, prompt_ids, max_tokens, temperature, top_p, seed, ignore_eos)

    def reset(self) -> None:
        self._cache = None

    def forward(self, ids: list[int]):
        torch = self.torch
        with torch.inference_mode(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            input_ids = torch.tensor([ids], device=self.device)
            out = self.model(input_ids=input_ids, past_key_values=self._cache, use_cache=True)
            self._cache = out.past_key_values
            return out.logits[0, -1].float().cpu().numpy()  # .cpu() waits for the GPU

    def logits(self, ids: list[int], first: int = 0):
        torch = self.torch
        # lm_head only over the rows asked for (a 512-token chunk scores its second half).
        keep = {"logits_to_keep": len(ids) - first} if first and self._keeps_logits() else {}
        with torch.inference_mode(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = self.model(input_ids=torch.tensor([ids], device=self.device), use_cache=False, **keep)
            return out.logits[0, first - len(ids) :].float().cpu().numpy()

    def _keeps_logits(self) -> bool:
        import inspect

        return "logits_to_keep" in inspect.signature(self.model.forward).parameters

    def synchronize(self) -> None:
        if self.device == "cuda":
            self.torch.cuda.synchronize()

    def close(self) -> None:
        self._cache = None
        self.model = None
        if self.device == "cuda":
            self.torch.cuda.empty_cache()


# compressed-tensors keeps a quantized Linear as weight_packed (8 int4 per int32) + these; they
# are quantization metadata, not parameters of the model.
QUANT_METADATA = ("weight_scale", "weight_zero_point", "weight_shape", "weight_g_idx", "weight_global_scale")


def quant_method(config) -> str | None:
    """The checkpoint's quantization method ("compressed-tensors", "bitsandbytes", ...) or None."""
    qc = getattr(config, "quantization_config", None)
    method = qc.get("quant_method") if isinstance(qc, dict) else getattr(qc, "quant_method", None)
    return str(getattr(method, "value", method)) if method is not None else None


def sixteen_bit_dense(path: Path) -> str | None:
    """The checkpoint's dtype when it is bfloat16/float16 and unquantized (config.json), else None."""
    from quantkit.core.atomic import read_json
    from quantkit.core.modelinfo import config_dtype

    config = read_json(path / "config.json") if (path / "config.json").is_file() else {}
    if not config or config.get("quantization_config"):
        return None
    dtype = config_dtype(config).replace("torch.", "")
    return dtype if dtype in ("bfloat16", "float16") else None


def count_parameters(model) -> int:
    """The model's parameter count as trained, also for packed artifacts: a compressed-tensors
    weight by its ``weight_shape``, a bitsandbytes 4-bit weight by its quant state's shape, a
    classic AWQ/GPTQ layer (packed ``qweight`` buffer) by its in x out features; quantization
    scales and zero points not at all."""
    import math

    total, seen = 0, set()
    for module in model.modules():
        if hasattr(module, "qweight") and hasattr(module, "in_features"):  # classic AWQ/GPTQ kernels: buffers
            total += int(module.in_features) * int(module.out_features)
        for name, param in module.named_parameters(recurse=False):
            if name in ("qweight", "qzeros", "scales", "g_idx"):
                continue
            if id(param) in seen or name in QUANT_METADATA:
                continue
            seen.add(id(param))  # tied embeddings count once
            shape = getattr(getattr(param, "quant_state", None), "shape", None)  # bnb Params4bit
            if name == "weight_packed" and hasattr(module, "weight_shape"):
                shape = module.weight_shape.tolist()
            total += math.prod(int(d) for d in shape) if shape is not None else param.numel()
    return total


def resolve_device(device: str, torch) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise InputError("`device='cuda'` asked for, but torch sees no CUDA GPU", hint="use `device='cpu'`")
    if device not in ("cpu", "cuda"):
        raise InputError(f"unknown device {device!r}", hint="choose auto, cpu or cuda")
    return device
