import click


@click.command(
    "report",
    epilog="""\b
Examples:
  quantkit report results/ -o report/
  quantkit report nf4.json gguf.json awq.json -o report/ --no-cards""",
)
@click.argument("inputs", nargs=-1, required=True, type=click.Path(exists=True))
@click.option(
    "-o",
    "--out",
    type=click.Path(file_okay=False),
    default="quantkit-report",
    show_default=True,
    help="Output folder (replaced).",
)
@click.option("--no-cards", is_flag=True, help="Do not fill the artifacts' model card results sections.")
def command(inputs, out, no_cards):
    """Merge bench results (JSON files, or folders holding them) into report.md with PNG plots
    (size vs decode tokens/s, size vs KLD), and fill each artifact's model card results section."""
    from quantkit.benchmark.report import load_results, write_report

    results = load_results(list(inputs))
    path = write_report(results, out, fill_cards=not no_cards)
    from quantkit.cli.render import console

    console.print(f"{len(results)} result(s) merged")
    click.echo(str(path))
