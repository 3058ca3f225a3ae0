import json

import click

from quantkit.pipeline.pick import engines


@click.command(
    "pick",
    epilog="""\b
Examples:
  quantkit pick runs/smollm2 --memory 6GiB
  quantkit pick runs/llama --memory 8GB --engine vllm --min-top1 0.9 --context 8192 --json""",
)
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("--memory", "-m", required=True, help="Memory budget: 6GiB, 6GB, 6000MiB.")
@click.option("--engine", type=click.Choice(engines()), help="Only artifacts this engine loads (as each method declares).")
@click.option("--min-top1", type=float, help="Drop artifacts whose top-1 agreement with the base is below this (0-1).")
@click.option("--context", type=int, default=4096, show_default=True, help="Context whose KV cache must fit too.")
@click.option("--json", "as_json", is_flag=True, help="Print the pick and the reasons as JSON on stdout.")
def command(run_dir, memory, engine, min_top1, context, as_json):
    """Choose the artifact of a finished run that fits MEMORY with the best quality (lowest KLD),
    the fastest among near-equals; say why each other one lost. Writes RUN_DIR/pick.png."""
    from quantkit.pipeline.pick import pick

    result = pick(run_dir, memory, engine=engine, min_top1=min_top1, context=context)
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
        return
    show(result)


def show(result) -> None:
    from rich.table import Table

    from quantkit.cli.render import console
    from quantkit.pipeline.pick import fmt_num, fmt_pct, gib

    c = result.chosen
    table = Table(title=f"pick for {gib(result.memory_bytes)}, {result.context} tokens")
    for col in ("artifact", "need", "KLD", "top-1", "tg", "verdict"):
        table.add_column(col, overflow="fold")
    for row in [c, *result.others]:
        need = gib(row.need_bytes) if row.weights_bytes else "-"
        table.add_row(
            row.name,
            need,
            fmt_num(row.kld_mean, 4),
            fmt_pct(row.top1),
            fmt_num(row.tg),
            "PICK" if row is c else row.reason,
            style="green" if row is c else None,
        )
    console.print(table)
    console.print(f"weights: {c.weights_source}; KV cache: {result.kv_note}")
    if result.plot:
        console.print(f"plot: {result.plot}")
    click.echo(c.name)
