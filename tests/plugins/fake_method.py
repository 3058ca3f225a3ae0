"""A hypothetical method, whole in one module, as a new method would be written: its settings
dataclass, its support verdict, its checks, its cost, its quantize. tests/test_options_schema.py
registers it through the real registry and shows that the CLI, recipes, the API and the dry run
all take it with no other change."""

import shutil
from dataclasses import dataclass
from pathlib import Path

from quantkit.core.errors import PreflightError
from quantkit.core.estimate import Footprint
from quantkit.core.settings import option
from quantkit.quantization.base import FormatFacts, MethodResult, copy_support_files
from quantkit.quantization.options import TransformersOptions


@dataclass
class SparseOptions(TransformersOptions):
    bits: int = option(16, "Weight bits.", choices=(16,))
    sparsity: float = option(0.5, "Share of weights set to zero.", minimum=0.0, maximum=0.9)


class SparseMethod:
    name = "sparse"
    extra = "awq"
    Options = SparseOptions
    summary = "sparse weights (a test's stand-in)"
    label = "Sparse"
    tags = ("sparse",)
    # Its facts, declared here only: cards, pick's engine table and docs take them from this.
    formats = {"dense": FormatFacts("transformers", ("dense-sparse",), ("transformers", "vllm"))}

    def supports(self, config: dict) -> str | None:
        return None if config.get("architectures") else "config.json names no architecture"

    def check_config(self, config: dict, options: SparseOptions) -> None:
        if config.get("hidden_size", 0) % 2:
            raise PreflightError("sparse needs an even hidden size")

    def footprint(self, options: SparseOptions) -> Footprint:
        return Footprint("load", (16 * (1 - options.sparsity) + 1,))

    def check(self, model_dir: Path, config: dict, options: SparseOptions) -> None:
        self.check_config(config, options)

    def quantize(self, model_dir: Path, out_dir: Path, options: SparseOptions) -> MethodResult:
        for path in Path(model_dir).glob("*.safetensors"):
            shutil.copyfile(path, out_dir / path.name)  # a stand-in: the weights as they are
        shutil.copyfile(Path(model_dir) / "config.json", out_dir / "config.json")
        copy_support_files(model_dir, out_dir)
        return MethodResult(format="dense", engine="transformers", settings={"bits": options.bits, "sparsity": options.sparsity})
