"""quantkit: from a hub checkpoint to a validated, benchmarked, deployable quantized artifact.

The Python API: ``import quantkit as qk`` then ``qk.download``, ``qk.quantize``, ``qk.bench``,
``qk.load`` and ``qk.run`` (quantkit/api.py). They are exported lazily (PEP 562), so importing
quantkit - and ``quantkit --help`` - imports nothing heavy.
"""

import logging as _logging

__version__ = "0.1.0"

# Harmless start-up noise from optional libraries pulled in by the AWQ extra: torchao's CUDA-only
# kernels fail to load on a CPU torch, and torch's pytree warns about torchao's enums.
for _name in ("torchao", "torch.utils._pytree"):
    _logging.getLogger(_name).setLevel(_logging.ERROR)

API = ("download", "quantize", "bench", "load", "run")
__all__ = ["__version__", *API]


def __getattr__(name: str):
    """The API functions, imported on first use (PEP 562): ``import quantkit`` stays cheap."""
    if name in API:
        from quantkit import api

        return getattr(api, name)
    raise AttributeError(f"module 'quantkit' has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *API])
