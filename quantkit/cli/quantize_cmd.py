from pathlib import Path

import click

from quantkit.quantize.gguf.tools import FTYPES  # a table only: nothing heavy imported
from quantkit.quantize.registry import METHODS

GGUF_TYPES = list(FTYPES)
METHOD_HELP = "; ".join(f"{name}: {entry.summary}" for name, entry in METHODS.items())


@click.command(
    "quantize",
    epilog="""\b
Examples:
  quantkit quantize bundled:smollm2-135m-instruct --method nf4
  quantkit quantize ./Yi-34B-Chat --method awq --ignore 're:.*down_proj'
  quantkit quantize bundled:smollm2-135m-instruct --method gguf --gguf-type Q8_0 --gguf-type Q4_K_M""",
)
@click.argument("model")
@click.option("--method", "-m", required=True, type=click.Choice(list(METHODS)), help=METHOD_HELP)
@click.option("--output", "-o", type=click.Path(path_type=Path), help="Artifact folder (default ./NAME-METHOD).")
@click.option("--overwrite", is_flag=True, help="Replace an existing output folder.")
@click.option("--bits", type=int, help="Weight bits (awq: 4).")
@click.option("--group-size", type=int, help="Quantization group size (awq: 128; must divide layer widths).")
@click.option("--ignore", multiple=True, help="Module name or 're:PATTERN' to leave unquantized (repeatable).")
# --calib is checked by the method, so a bad file is its one-line error.
@click.option("--calib", type=click.Path(path_type=Path),
              help="Calibration text (.txt or .jsonl) for awq and the gguf importance matrix.")
@click.option("--calib-samples", type=int, help="Number of calibration samples.")
@click.option("--calib-seq-len", type=int, help="Tokens per calibration sample.")
@click.option("--format", "fmt", help="Output format where a method has several (awq: compressed-tensors|autoawq).")
@click.option("--quant-type", type=click.Choice(["nf4", "fp4"]), help="bitsandbytes 4-bit type.")
@click.option("--double-quant/--no-double-quant", default=True, show_default=True, help="bitsandbytes 4-bit double quantization.")
@click.option("--int8-threshold", type=float, default=6.0, show_default=True, help="LLM.int8 outlier threshold.")
@click.option("--gguf-type", "gguf_types", multiple=True, type=click.Choice(GGUF_TYPES, case_sensitive=False), help="GGUF type (repeatable).")
@click.option("--imatrix/--no-imatrix", default=None,
              help="gguf: importance matrix from the calibration set (default: on at 4 bits and below; IQ1/IQ2/Q2_K_S need it).")
@click.option("--llama-cpp-dir", type=click.Path(exists=True, file_okay=False, path_type=Path), envvar="LLAMA_CPP_DIR",
              help="Use this llama.cpp checkout's converter.")
@click.option("--ollama", is_flag=True, help="gguf: also write an Ollama Modelfile.")
@click.option("--dtype", type=click.Choice(["auto", "float32", "bfloat16", "float16"]), help="Compute/save dtype.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--source", type=click.Choice(["hf", "modelscope"]), default="hf", show_default=True, help="Hub for a repo id.")
@click.option("--revision", help="Hub revision for a repo id.")
@click.option("--trust-remote-code", is_flag=True, help="Allow the model's own Python code to run.")
@click.option("--force", is_flag=True, help="Skip the memory preflight.")
def command(model, method, output, overwrite, fmt, gguf_types, source, revision, **settings):
    """Quantize MODEL (a folder, bundled:NAME or a hub id) into an artifact folder.

    Prints the artifact folder as the last line."""
    from quantkit.quantize.quantize import quantize
    from quantkit.quantize.registry import QuantizeOptions

    options = QuantizeOptions(
        format=fmt, gguf_types=[t.upper() for t in gguf_types],
        ignore=list(settings.pop("ignore")), **settings,
    )
    path = quantize(model, method, output, options, overwrite=overwrite, source=source, revision=revision)
    click.echo(str(path))
