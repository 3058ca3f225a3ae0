"""Placeholder: being implemented."""

from quantkit.errors import QuantizeError


class GgufMethod:
    name = "gguf"
    summary = "gguf"
    extra = "gguf"

    def supports(self, config):
        return None

    def check(self, model_dir, config, options):
        raise QuantizeError("method gguf is not implemented yet")

    def quantize(self, model_dir, out_dir, options):
        raise QuantizeError("method gguf is not implemented yet")
