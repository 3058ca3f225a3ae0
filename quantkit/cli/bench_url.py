"""`quantkit bench --url`: the options and printing of the serving load test (quantkit.benchmark.loadtest),
kept apart from bench_cmd so that command only gains one decorator and one branch."""

import click

URL_OPTIONS = [
    click.option(
        "--url",
        multiple=True,
        help="Load-test this OpenAI-compatible server instead of an artifact "
        "(quantkit serve, vLLM, llama-server, Ollama), e.g. http://127.0.0.1:8000; "
        "repeat to compare servers in one report.",
    ),
    click.option(
        "--concurrency",
        "-c",
        "concurrency",
        multiple=True,
        type=click.IntRange(1),
        help="--url: requests in flight (repeatable: one run per level, e.g. -c 1 -c 2 -c 4 -c 8; default 1).",
    ),
    click.option(
        "--request-rate",
        "request_rate",
        multiple=True,
        type=click.FloatRange(min=0, min_open=True),
        help="--url: Poisson arrivals per second (repeatable: one run per rate).",
    ),
    click.option("--num-requests", type=click.IntRange(1), default=16, show_default=True, help="--url: requests per run."),
    click.option("--max-tokens", type=click.IntRange(1), default=64, show_default=True, help="--url: max_tokens per request."),
    click.option(
        "--ignore-eos",
        is_flag=True,
        help="--url: every request generates exactly --max-tokens (vLLM's and llama-server's ignore_eos), "
        "so servers and models compare on equal work.",
    ),
    click.option("--model", help="--url: model id to request (default: each server's first in /v1/models)."),
    click.option("--api-key", envvar="QUANTKIT_API_KEY", help="--url: bearer token (env QUANTKIT_API_KEY)."),
    click.option(
        "--plot",
        "plot_file",
        type=click.Path(dir_okay=False),
        help="--url: PNG of throughput and TTFT against concurrency (default: beside --json when several levels ran).",
    ),
]


URL_PARAMS = ("concurrency", "request_rate", "num_requests", "max_tokens", "ignore_eos", "model", "api_key", "plot_file")


def url_options(func):
    for decorator in reversed(URL_OPTIONS):
        func = decorator(func)
    return func


def run(
    url,
    json_file=None,
    concurrency=(),
    request_rate=(),
    num_requests=16,
    max_tokens=64,
    ignore_eos=False,
    model=None,
    api_key=None,
    plot_file=None,
) -> None:
    from pathlib import Path

    from quantkit.benchmark.loadtest import load_test, plot_sweep
    from quantkit.core.errors import QuantkitError

    urls = [url] if isinstance(url, str) else list(url)
    servers = [
        {
            "url": u,
            "results": [
                r.to_dict()
                for r in load_test(
                    u,
                    model=model,
                    concurrency=list(concurrency),
                    request_rate=list(request_rate),
                    num_requests=num_requests,
                    max_tokens=max_tokens,
                    ignore_eos=ignore_eos,
                    api_key=api_key,
                )
            ],
        }
        for u in urls
    ]
    data = {"url": urls[0], "results": servers[0]["results"], "servers": servers}
    render(data)
    if json_file:
        from quantkit.core.atomic import write_json

        write_json(json_file, data)
        click.echo(json_file)
    if plot_file is None and json_file and len(concurrency) > 1:
        plot_file = str(Path(json_file).with_suffix(".png"))
    if plot_file and plot_sweep(data, plot_file):
        click.echo(plot_file)
    failed = [r for s in servers for r in s["results"] if r["completed"] == 0]
    if failed:
        raise QuantkitError(f"every request failed at {len(failed)} level(s): {failed[0]['error_messages'][:1]}")


def render(data: dict, console=None) -> None:
    """One compact table (fits 80 columns): a row per server and level; ms are medians unless
    marked p99. Then, comparing servers, the throughput ratio of each to the first."""
    from rich import box
    from rich.markup import escape
    from rich.table import Table

    if console is None:
        from quantkit.cli.render import console
    servers = data.get("servers") or [{"url": data["url"], "results": data["results"]}]
    names = "ABCDEFGHIJ"

    def ms(d, key="median"):
        return "-" if d[key] is None else f"{d[key]:.0f}"

    title = "quantkit bench --url " + "  ".join(
        (f"{names[i]}={s['url']}" if len(servers) > 1 else s["url"]) for i, s in enumerate(servers)
    )
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, padding=(0, 1))
    rated = any(r["request_rate"] for s in servers for r in s["results"])
    columns = (
        (["srv"] if len(servers) > 1 else [])
        + ["conc"]
        + (["rate/s"] if rated else [])
        + ["ok/err", "req/s", "tok/s", "TTFT", "TTFT99", "TPOT", "ITL", "E2EL"]
    )
    for column in columns:
        table.add_column(column, justify="right", no_wrap=True)
    for i, server in enumerate(servers):
        for r in server["results"]:
            table.add_row(
                *([names[i]] if len(servers) > 1 else []),
                str(r["concurrency"] or "-"),
                *([str(r["request_rate"] or "inf")] if rated else []),
                f"{r['completed']}/{r['errors']}",
                f"{r['request_throughput']:.2f}",
                f"{r['output_throughput']:.1f}",
                ms(r["ttft_ms"]),
                ms(r["ttft_ms"], "p99"),
                ms(r["tpot_ms"]),
                ms(r["itl_ms"]),
                ms(r["e2el_ms"]),
            )
    console.print(table)
    console.print("ms, median (TTFT99: 99th percentile); tok/s: output tokens per second", highlight=False)
    first = {r["concurrency"]: r for r in servers[0]["results"]}
    for i, server in enumerate(servers[1:], 1):
        ratios = [
            f"c{r['concurrency']}: {r['output_throughput'] / first[r['concurrency']]['output_throughput']:.2f}x"
            for r in server["results"]
            if r["concurrency"] in first and first[r["concurrency"]]["output_throughput"]
        ]
        if ratios:
            console.print(f"{names[i]}/A tok/s  " + "  ".join(ratios), highlight=False)
    for server in servers:
        for r in server["results"]:
            for message in r["error_messages"]:
                console.print(f"[red]error[/] {escape(message)}", highlight=False)
