import click


@click.command("inspect", epilog="""\b
Examples:
  quantkit inspect bundled:smollm2-135m-instruct
  quantkit inspect ./smollm2-135m-instruct-nf4""")
@click.argument("model")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def command(model, as_json):
    """Show a model folder's architecture, size and method support, or an artifact's manifest.

    MODEL is a folder or bundled:NAME (a hub id is downloaded first)."""
    import json

    from quantkit.artifact import read_manifest
    from quantkit.modelinfo import describe
    from quantkit.modelref import resolve_model

    path = resolve_model(model)
    info = describe(path)
    manifest = read_manifest(path)
    if as_json:
        click.echo(json.dumps({"path": str(path), "model": info.as_dict(), "manifest": manifest}, indent=2))
        return
    from quantkit.cli.render import model_table

    model_table(info, manifest)
    click.echo(str(path))
