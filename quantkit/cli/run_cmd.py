import sys
from pathlib import Path

import click


@click.command(
    "run",
    epilog="""\b
Examples:
  quantkit run recipes/smollm2-135m-instruct.yaml
  quantkit run smollm2-135m-instruct --only nf4 --out runs/smollm2
  quantkit run qwen2.5-7b-instruct --dry-run
  quantkit run recipes/llama-3.1-8b-instruct.yaml --force""",
)
@click.argument("recipe")
@click.option(
    "--out",
    "-o",
    type=click.Path(file_okay=False, path_type=Path),
    help="Run folder (default ./runs/RECIPE-NAME); rerunning into it resumes.",
)
@click.option("--only", multiple=True, metavar="NAME", help="Run only this artifact of the recipe (repeatable).")
@click.option("--force", is_flag=True, help="Redo every stage, even those whose outputs are up to date.")
@click.option("--dry-run", is_flag=True, help="Print the plan with memory/disk/time estimates and exit.")
@click.option("--verbose", "-v", is_flag=True, help="Stream the libraries' output too (default: to RUN/run.log).")
@click.option(
    "--pick", "pick_memory", metavar="MEMORY", help="After the run, print the artifact to deploy in MEMORY (quantkit pick)."
)
def command(recipe, out, only, force, dry_run, verbose, pick_memory):
    """Run RECIPE (a YAML file or a shipped recipe's name): model, every artifact, bench, smoke
    chat, quality, gates, report.

    Resumable: stages whose outputs match the recipe are skipped. Exit code 0 when every artifact
    passed, 3 when only gates failed, 1 when a stage failed. Prints the report's path last."""
    from quantkit.pipeline.recipe import load_recipe
    from quantkit.pipeline.run import run

    parsed = load_recipe(recipe)
    summary = run(
        parsed, out or Path("runs") / parsed.name, only=list(only) or None, force=force, dry_run=dry_run, verbose=verbose
    )
    from quantkit.cli.render_run import plan_table, summary_table

    if dry_run:
        plan_table(summary.plan)
    else:
        summary_table(summary)
    if summary.error:
        click.echo(f"error: {summary.error}", err=True)
    if pick_memory and not dry_run:
        from quantkit.cli.pick_cmd import show
        from quantkit.core.errors import QuantkitError
        from quantkit.pipeline.pick import pick

        try:
            show(pick(summary.out_dir, pick_memory))
        except QuantkitError as exc:  # the run's own result and exit code still stand
            click.echo(f"pick: {exc}", err=True)
    if summary.report:
        click.echo(str(summary.report))
    if summary.exit_code:
        sys.exit(summary.exit_code)  # 3: only gates failed, 1: a stage failed
