"""A hypothetical engine, whole in one module, as a new engine would be added: its class (here the
transformers engine under another name: what matters is that nothing else knows its name), its
registry entry with every fact the rest of quantkit asks about, and a method that writes the
format it runs. tests/test_fake_engine.py registers both and shows that quantize (with its
verification in a fresh process), the card, bench and pick take them with no other change."""

from pathlib import Path

from plugins.fake_method import SparseMethod
from quantkit.engines import EngineEntry, VerifyRecipe
from quantkit.engines.hf import TransformersEngine
from quantkit.quantization.base import FormatFacts, MethodResult


class FakeEngine(TransformersEngine):
    name = "fake"


FAKE_ENGINE = EngineEntry(
    "plugins.fake_engine:FakeEngine",
    "a test's stand-in engine",
    # Its verification child: a standalone file that never imports quantkit, loaded by path.
    VerifyRecipe(str(Path(__file__).with_name("fake_engine_child.py")), "the fake engine"),
    ("torch", "transformers"),
    formats=("fake-format",),
    on_torch=True,
    library_name="fake-lib",
    bytes_per_token="quantkit.engines.weights_read:torch_model_bytes",
)


class FakeFormatMethod(SparseMethod):
    """The sparse stand-in, writing the fake engine's format (its card library is the engine's)."""

    name = "fakeq"
    label = "FakeQ"
    tags = ("fakeq",)
    formats = {"fake-format": FormatFacts(None, ("fake-format",), ())}

    def quantize(self, model_dir: Path, out_dir: Path, options) -> MethodResult:
        result = super().quantize(model_dir, out_dir, options)
        return MethodResult(format="fake-format", engine="fake", settings=result.settings)
