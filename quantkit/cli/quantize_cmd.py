from pathlib import Path

import click

from quantkit.cli.settings_flags import options_from_flags, setting_flags, settings_given
from quantkit.quantization.registry import METHODS, settings_table, summary

METHOD_HELP = "; ".join(f"{name}: {summary(name)}" for name in METHODS)


@click.command(
    "quantize",
    epilog="""\b
Examples:
  quantkit quantize bundled:smollm2-135m-instruct --method nf4
  quantkit quantize ./Yi-34B-Chat --method awq --ignore 're:.*down_proj'
  quantkit quantize bundled:smollm2-135m-instruct --method gptq --group-size 64 --calib-samples 32
  quantkit quantize bundled:smollm2-135m-instruct --method gguf --gguf-type Q8_0 --gguf-type Q4_K_M

Each setting's help says which methods use it; giving one the chosen method does not use is an error.""",
)
@click.argument("model")
@click.option("--method", "-m", required=True, type=click.Choice(list(METHODS)), help=METHOD_HELP)
@click.option("--output", "-o", type=click.Path(path_type=Path), help="Artifact folder (default ./NAME-METHOD).")
@click.option("--overwrite", is_flag=True, help="Replace an existing output folder.")
@click.option("--source", type=click.Choice(["hf", "modelscope"]), default="hf", show_default=True, help="Hub for a repo id.")
@click.option("--revision", help="Hub revision for a repo id.")
@setting_flags(settings_table)
def command(model, method, output, overwrite, source, revision, **settings):
    """Quantize MODEL (a folder, bundled:NAME or a hub id) into an artifact folder.

    Prints the artifact folder as the last line."""
    from quantkit.quantization.quantize import quantize

    given = settings_given(click.get_current_context(), settings, settings_table(), method, "--method")
    path = quantize(
        model, method, output, options_from_flags(method, given), overwrite=overwrite, source=source, revision=revision
    )
    click.echo(str(path))
