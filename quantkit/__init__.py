"""quantkit: from a hub checkpoint to a validated, benchmarked, deployable quantized artifact.

Each job is one plain function that is also the Python API (``quantkit.hub.download``,
``quantkit.quantize.quantize``, ...). Nothing heavy is imported here, so ``quantkit --help``
stays fast.
"""

__version__ = "0.1.0"

import logging as _logging

# Harmless start-up noise from optional libraries pulled in by the AWQ extra: torchao's CUDA-only
# kernels fail to load on a CPU torch, and torch's pytree warns about torchao's enums.
for _name in ("torchao", "torch.utils._pytree"):
    _logging.getLogger(_name).setLevel(_logging.ERROR)
