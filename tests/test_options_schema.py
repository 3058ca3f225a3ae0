"""The per-method option lists (quantkit.methods.METHODS[...].options) drive the CLI, recipe and API refusals."""

import pytest
from click.testing import CliRunner

from quantkit import api
from quantkit.cli import cli
from quantkit.errors import InputError
from quantkit.methods import METHODS, MethodEntry
from quantkit.methods.options import unused, unused_message
from test_recipe import error_of, recipe_text, write


def test_gguf_with_group_size_flag_is_an_error_naming_the_flag():
    result = CliRunner().invoke(cli, ["quantize", "no-such-model", "--method", "gguf", "--group-size", "64"])
    assert isinstance(result.exception, InputError), result.output
    assert str(result.exception).startswith("the gguf method does not use --group-size")


def test_flag_left_at_its_default_is_not_an_error():
    # --device has a default: only what the user typed counts, so the model lookup is what fails here.
    result = CliRunner().invoke(cli, ["quantize", "no-such-model", "--method", "gguf", "--device", "cpu"])
    assert "does not use" not in str(result.exception)


def test_recipe_key_the_method_does_not_read_is_an_error(tmp_path):
    err = error_of(write(tmp_path, recipe_text(method="gguf", artifact="    group_size: 64\n")))
    assert "artifacts[0].group_size" in str(err) and "only the awq method uses this setting, not gguf" in str(err)


def test_api_refuses_a_keyword_the_method_does_not_read():
    with pytest.raises(InputError, match="the nf4 method does not use gguf_types"):
        api.quantize("no-such-model", "nf4", gguf_types=["Q8_0"])


def test_a_new_method_gets_its_recipe_keys_and_errors_from_its_registry_line(tmp_path, monkeypatch):
    monkeypatch.setitem(METHODS, "dummy", MethodEntry("nowhere:Dummy", "a test method", ("group_size",)))
    assert unused("dummy", ["group_size", "gguf_types", "device"]) == ["gguf_types"]
    assert unused_message("group_size", "gguf") == "only the awq and dummy methods use this setting, not gguf"
    recipe = __import__("quantkit.recipe", fromlist=["load_recipe"]).load_recipe(
        write(tmp_path, recipe_text(method="dummy", artifact="    group_size: 64\n")))
    assert recipe.artifacts[0].group_size == 64
    err = error_of(write(tmp_path, recipe_text(method="dummy", artifact="    imatrix: true\n"), "b.yaml"))
    assert "only the gguf method uses this setting, not dummy" in str(err)
