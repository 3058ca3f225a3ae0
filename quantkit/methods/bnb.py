"""Placeholder: being implemented."""

from quantkit.errors import QuantizeError


class Nf4Method:
    name = "nf4"
    summary = "nf4"
    extra = "bnb"

    def supports(self, config):
        return None

    def check(self, model_dir, config, options):
        raise QuantizeError("not implemented yet")

    def quantize(self, model_dir, out_dir, options):
        raise QuantizeError("not implemented yet")


class Int8Method(Nf4Method):
    name = "int8"
