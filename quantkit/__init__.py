"""quantkit: from a hub checkpoint to a validated, benchmarked, deployable quantized artifact.

The Python API: ``import quantkit as qk`` then ``qk.download``, ``qk.quantize``, ``qk.bench``,
``qk.load`` and ``qk.run`` (quantkit/api.py). They are exported lazily (PEP 562), so importing
quantkit - and ``quantkit --help`` - imports nothing heavy.
"""

import logging as _logging
import sys as _sys
import types as _types

__version__ = "0.1.0"

# Harmless start-up noise from optional libraries pulled in by the AWQ extra: torchao's CUDA-only
# kernels fail to load on a CPU torch, and torch's pytree warns about torchao's enums.
for _name in ("torchao", "torch.utils._pytree"):
    _logging.getLogger(_name).setLevel(_logging.ERROR)

API = ("download", "quantize", "bench", "load", "run")
__all__ = ["__version__", *API]


def _api_function(name: str) -> property:
    def get(_package):
        from quantkit import api

        return getattr(api, name)

    def keep_function(_package, _submodule):
        """The import system sets a loaded submodule of the same name (quantkit.quantize.quantize,
        quantkit.bench.bench) here; it stays in sys.modules, and the API name keeps meaning the function."""

    return property(get, keep_function)


class _Package(_types.ModuleType):
    """quantkit's module type: the API functions as data descriptors, resolved on first use (PEP 562
    style laziness), which submodules of the same name cannot shadow."""


for _name in API:
    setattr(_Package, _name, _api_function(_name))
_sys.modules[__name__].__class__ = _Package
