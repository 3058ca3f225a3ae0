"""quantkit: from a hub checkpoint to a validated, benchmarked, deployable quantized artifact.

Each job is one plain function that is also the Python API (``quantkit.hub.download``,
``quantkit.quantize.quantize``, ...). Nothing heavy is imported here, so ``quantkit --help``
stays fast.
"""

__version__ = "0.1.0"
