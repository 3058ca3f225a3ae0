"""Checks every quantization method shares, run before any weights are loaded.

Each helper raises a typed error with a one-line fix, or returns quietly:

- ``check_device(device)``: cheap, for ``quantize()`` itself; imports torch only for ``cuda``.
- ``resolve_device(device) -> "cuda" | "cpu"``: ``auto`` picks CUDA when torch sees a GPU.
- ``require_cuda(method)``: for a method that cannot run without a GPU.
- ``require_bits(method, bits, allowed)``: ``--bits`` must be one the method offers (None = default).
- ``causal_lm_reason(config) -> str | None``: None for a decoder-only causal LM that transformers
  (or, with --trust-remote-code, the model's own code) can load; a reason otherwise. For ``supports``.
- ``require_trusted_code(config, trust_remote_code)``: a model that ships its own code needs the flag.
- ``check_memory(config, dtype, factor, force)``: the run's peak RAM, estimated from config.json
  as parameters x bytes per parameter x ``factor`` (+ a fixed allowance for the libraries), must
  fit in the RAM available now; ``force=True`` (``--force``) skips it.
"""

import psutil

from quantkit.errors import InputError, PreflightError
from quantkit.modelinfo import DTYPE_BYTES, config_dtype, estimate_params, human_size

# torch + transformers + tokenizer already take this much before the first weight is read.
LIBRARY_ALLOWANCE_BYTES = 600 * 2**20


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def check_device(device: str | None) -> None:
    """Refuse an explicit ``cuda`` without a usable GPU (``auto``/``cpu`` always pass)."""
    if device == "cuda" and not cuda_available():
        raise PreflightError("--device cuda was asked for but torch sees no CUDA GPU",
                             hint="use --device cpu (or auto), or install a CUDA build of torch")
    if device not in (None, "auto", "cpu", "cuda"):
        raise InputError(f"unknown device {device!r}", hint="choose auto, cpu or cuda")


def resolve_device(device: str | None) -> str:
    """``auto`` -> ``cuda`` when a GPU is usable, else ``cpu``; ``cuda`` without one is refused."""
    check_device(device)
    if device in (None, "auto"):
        return "cuda" if cuda_available() else "cpu"
    return device


def require_cuda(method: str) -> None:
    """For methods whose library has no CPU path."""
    if not cuda_available():
        raise PreflightError(f"method {method} needs a CUDA GPU and torch sees none",
                             hint="run it on a machine with an NVIDIA GPU and a CUDA build of torch")


def require_bits(method: str, bits: int | None, allowed: tuple[int, ...]) -> None:
    """``bits`` None means the method's default; anything else must be in ``allowed``."""
    if bits is not None and bits not in allowed:
        choices = ", ".join(str(b) for b in allowed)
        raise InputError(f"method {method} cannot make {bits}-bit weights",
                         hint=f"use --bits {choices} or leave --bits out")


def transformers_knows(model_type: str) -> bool:
    """Whether transformers implements ``model_type`` itself (its own model-type table, read
    without importing torch: see quantkit.support)."""
    from quantkit.support import transformers_knows as knows

    return knows(model_type)


def causal_lm_reason(config: dict) -> str | None:
    """None when ``config`` describes a decoder-only causal LM that can be loaded; else why not."""
    from quantkit.support import causal_lm_reason as reason

    return reason(config)


def require_trusted_code(config: dict, trust_remote_code: bool) -> None:
    """A model type transformers lacks runs the checkpoint's own Python code: only when asked."""
    model_type = str(config.get("model_type") or "")
    if not transformers_knows(model_type) and not trust_remote_code:
        raise PreflightError(f"model type {model_type!r} needs the model's own code to load",
                             hint="pass --trust-remote-code if you trust its authors")


def estimate_peak_bytes(config: dict, dtype: str | None, factor: float) -> int:
    """Parameters x bytes per parameter (``dtype``, default the checkpoint's) x ``factor``."""
    dtype = dtype if dtype and dtype != "auto" else config_dtype(config)
    per_param = DTYPE_BYTES.get(dtype.replace("torch.", ""), 4)
    return int(estimate_params(config) * per_param * factor) + LIBRARY_ALLOWANCE_BYTES


def check_memory(config: dict, dtype: str | None, factor: float, force: bool = False) -> int:
    """Refuse when the estimated peak does not fit in available RAM; return the estimate."""
    need = estimate_peak_bytes(config, dtype, factor)
    available = psutil.virtual_memory().available
    if need > available and not force:
        raise PreflightError(
            f"this run needs about {human_size(need)} of RAM but only {human_size(available)} is available",
            hint="free memory or use a larger machine; pass --force to try anyway",
        )
    return need
