import click


@click.command(
    "inspect",
    epilog="""\b
Examples:
  quantkit inspect bundled:smollm2-135m-instruct
  quantkit inspect HuggingFaceTB/SmolLM2-135M-Instruct
  quantkit inspect ./smollm2-135m-instruct-nf4
  quantkit inspect ./smollm2-135m-instruct-gguf/smollm2-135m-instruct-Q4_K_M.gguf""",
)
@click.argument("model")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def command(model, as_json):
    """Show a model's architecture, size and, per method, whether it can be quantized (or why
    not, and the fix); an artifact's manifest; or a .gguf file's metadata and the engines that run it.

    MODEL is a folder, bundled:NAME, a hub id (downloaded first) or a .gguf file."""
    import json
    from pathlib import Path

    path = Path(model).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        from quantkit.quantization.gguf.inspect import describe_gguf

        info = describe_gguf(path)
        if as_json:
            click.echo(json.dumps(info, indent=2))
            return
        gguf_table(info)
        click.echo(str(path.resolve()))
        return

    from quantkit.core.manifest import read_manifest
    from quantkit.core.modelinfo import describe
    from quantkit.hub.model_ref import resolve_model
    from quantkit.quantization.registry import method_support

    path = resolve_model(model)
    info = describe(path)
    info.support = method_support(info.config)
    manifest = read_manifest(path)
    if as_json:
        click.echo(json.dumps({"path": str(path), "model": info.as_dict(), "manifest": manifest}, indent=2))
        return
    from quantkit.cli.render import model_table

    model_table(info, manifest)
    click.echo(str(path))


def gguf_table(info: dict) -> None:
    from rich.table import Table

    from quantkit.cli.render import console
    from quantkit.core.modelinfo import human_count, human_size

    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_row("file", f"GGUF, {info['file_type'] or 'unknown type'} ({info['bits_per_weight']} bits per weight)")
    table.add_row("architecture", str(info["architecture"]) + (f" ({info['name']})" if info.get("name") else ""))
    table.add_row("parameters", human_count(info["n_params"]))
    table.add_row("size", human_size(info["size_bytes"]))
    table.add_row("layers / hidden / context", f"{info['num_layers']} / {info['hidden_size']} / {info['context_length']}")
    table.add_row("tensor types", ", ".join(f"{k} {v}" for k, v in info["tensor_types"].items()))
    table.add_row("chat template", "yes" if info["chat_template"] else "[yellow]none (a base model: completion only)[/]")
    from quantkit.engines import ENGINES

    for engine, verdict in info["engines"].items():
        # A registered engine that loads a GGUF without declaring the format its own dequantizes it
        # on load (transformers); the others run it (llama.cpp, Ollama).
        dequantizes = engine in ENGINES and "gguf" not in ENGINES[engine].formats
        runs = "[green]loads it (dequantized to full precision)[/]" if dequantizes else "[green]runs it[/]"
        table.add_row(f"engine {engine}", runs if verdict is None else f"[yellow]{verdict}[/]")
    table.add_row("quantize", "already quantized: quantize methods take the Hugging Face checkpoint")
    console.print(table)
