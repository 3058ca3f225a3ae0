"""`quantkit bench --url`: the options and printing of the serving load test (quantkit.loadtest),
kept apart from bench_cmd so that command only gains one decorator and one branch."""

import click

URL_OPTIONS = [
    click.option("--url", help="Load-test this OpenAI-compatible server instead of an artifact "
                               "(quantkit serve, vLLM, llama-server, Ollama), e.g. http://127.0.0.1:8000."),
    click.option("--concurrency", "-c", "concurrency", multiple=True, type=click.IntRange(1),
                 help="--url: requests in flight (repeatable: one run per level; default 1)."),
    click.option("--request-rate", "request_rate", multiple=True, type=click.FloatRange(min=0, min_open=True),
                 help="--url: Poisson arrivals per second (repeatable: one run per rate)."),
    click.option("--num-requests", type=click.IntRange(1), default=16, show_default=True, help="--url: requests per run."),
    click.option("--max-tokens", type=click.IntRange(1), default=64, show_default=True, help="--url: max_tokens per request."),
    click.option("--model", help="--url: model id to request (default: the server's first in /v1/models)."),
    click.option("--api-key", envvar="QUANTKIT_API_KEY", help="--url: bearer token (env QUANTKIT_API_KEY)."),
]


def url_options(func):
    for decorator in reversed(URL_OPTIONS):
        func = decorator(func)
    return func


def run(url: str, json_file=None, concurrency=(), request_rate=(), num_requests=16, max_tokens=64, model=None,
        api_key=None) -> None:
    from quantkit.errors import QuantkitError
    from quantkit.loadtest import load_test

    results = load_test(url, model=model, concurrency=list(concurrency), request_rate=list(request_rate),
                        num_requests=num_requests, max_tokens=max_tokens, api_key=api_key)
    data = {"url": url, "results": [r.to_dict() for r in results]}
    render(data)
    if json_file:
        from quantkit.cli.bench_cmd import write_json

        write_json(json_file, data)
        click.echo(json_file)
    failed = [r for r in results if r.completed == 0]
    if failed:
        raise QuantkitError(f"every request failed at {len(failed)} level(s): {failed[0].error_messages[:1]}")


def render(data: dict) -> None:
    from rich.markup import escape
    from rich.table import Table

    from quantkit.cli.render import console

    def stats(d):
        return " / ".join("-" if d[k] is None else f"{d[k]:.1f}" for k in ("mean", "median", "p99"))

    table = Table(title=f"quantkit bench --url {data['url']}  (ms: mean / median / p99)", title_justify="left")
    for column in ("conc.", "rate/s", "ok / err", "req/s", "out tok/s", "TTFT", "TPOT", "ITL", "E2EL"):
        table.add_column(column, justify="right")
    for r in data["results"]:
        table.add_row(str(r["concurrency"] or "-"), str(r["request_rate"] or "inf"), f"{r['completed']} / {r['errors']}",
                      f"{r['request_throughput']:.2f}", f"{r['output_throughput']:.1f}", stats(r["ttft_ms"]),
                      stats(r["tpot_ms"]), stats(r["itl_ms"]), stats(r["e2el_ms"]))
    console.print(table)
    for r in data["results"]:
        for message in r["error_messages"]:
            console.print(f"[red]error[/] {escape(message)}", highlight=False)
