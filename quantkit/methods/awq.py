"""Placeholder: being implemented."""

from quantkit.errors import QuantizeError


class AwqMethod:
    name = "awq"
    summary = "awq"
    extra = "awq"

    def supports(self, config):
        return None

    def check(self, model_dir, config, options):
        raise QuantizeError("method awq is not implemented yet")

    def quantize(self, model_dir, out_dir, options):
        raise QuantizeError("method awq is not implemented yet")
