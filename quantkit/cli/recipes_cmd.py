import click


@click.command(
    "recipes",
    epilog="""\b
Examples:
  quantkit recipes
  quantkit recipes --matrix
  quantkit recipes --matrix --runner cpu""",
)
@click.option("--matrix", is_flag=True, help="Print the CI matrix (recipe x artifact) as JSON.")
@click.option("--runner", type=click.Choice(["cpu", "gpu"]), help="Only recipes for this kind of runner.")
def command(matrix, runner):
    """List the shipped recipes, or print the JSON matrix a CI workflow runs them with."""
    import json

    from quantkit.pipeline.recipe import ci_matrix, load_recipe, shipped_recipes

    if matrix:
        click.echo(json.dumps(ci_matrix(runner)))
        return
    from rich.table import Table

    from quantkit.cli.render import console

    table = Table()
    for col in ("recipe", "runner", "model", "artifacts", "description"):
        table.add_column(col)
    for name, path in shipped_recipes().items():
        recipe = load_recipe(path)
        if runner and recipe.runner != runner:
            continue
        table.add_row(name, recipe.runner, recipe.model.id, ", ".join(a.name for a in recipe.artifacts), recipe.description)
        click.echo(name)  # stdout: one name per line, for scripts; the table goes to stderr
    console.print(table)
