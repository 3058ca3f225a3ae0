import click

from quantkit.cli.bench_url import URL_PARAMS, url_options
from quantkit.cli.settings_flags import setting_flags
from quantkit.engines.servers import SERVERS


def bench_options(given: dict):
    """BenchOptions from the flags given: --no-smoke skips the smoke (BenchOptions.smoke); the
    threshold flags (--max-kld, ...) are the Gates'."""
    from quantkit.benchmark.bench import BenchOptions
    from quantkit.benchmark.gates import Gates
    from quantkit.core.settings import build, settings_of

    gate_flags = {name for name, f in settings_of(Gates).items() if f.metadata.get("cli", True)}
    options = build(BenchOptions, "bench", {k: v for k, v in given.items() if k not in gate_flags})
    options.gates = build(Gates, "bench", {k: v for k, v in given.items() if k in gate_flags})
    return options


def bench_settings_table() -> dict:
    """``quantkit bench``'s flags: BenchOptions' and Gates' settings (quantkit/core/settings.py)."""
    from quantkit.benchmark.bench import BenchOptions
    from quantkit.benchmark.gates import Gates
    from quantkit.core.settings import settings_of

    return {
        name: (f, None) for cls in (BenchOptions, Gates) for name, f in settings_of(cls).items() if f.metadata.get("cli", True)
    }  # Gates' smoke is a recipe's; --no-smoke skips it


@click.command(
    "bench",
    epilog="""\b
Examples:
  quantkit bench ./smollm2-135m-instruct-gguf --json bench.json
  quantkit bench model.Q4_K_M.gguf --base bundled:smollm2-135m-instruct --threads 2
  quantkit bench ./smollm2-135m-instruct-nf4 -p 128 -n 32 --repetitions 3 --no-smoke
  quantkit bench ./qwen-awq --device cuda --max-kld 0.1 --min-top1 0.85
  quantkit bench ./smollm2-135m-instruct-awq --engine vllm -c 1 -c 4
  quantkit bench --url http://127.0.0.1:8000 -c 1 -c 4 -c 16 --json serve.json""",
)
@click.argument("artifact", required=False)
@click.option("--base", help="Base model to compare with (folder, bundled:NAME or hub id); default: the source in quantkit.json.")
@click.option("--json", "json_file", type=click.Path(dir_okay=False), help="Write the result as JSON to this file.")
@click.option(
    "--engine",
    "serving_engine",
    type=click.Choice(tuple(SERVERS)),
    help="Also serve ARTIFACT in this deployment engine and load-test it at each -c level "
    "(default 1, 4, 8; --num-requests, --max-tokens), beside the in-process numbers.",
)
@click.option("--tensor-parallel", type=click.IntRange(1), default=1, help="With --engine vllm: GPUs per pipeline stage.")
@click.option("--pipeline-parallel", type=click.IntRange(1), default=1, help="With --engine vllm: pipeline stages.")
@setting_flags(bench_settings_table)
@url_options
def command(artifact, base, json_file, url, serving_engine, tensor_parallel, pipeline_parallel, **flags):
    """Benchmark ARTIFACT: load time, memory, prefill/decode speed, latency, bandwidth, smoke chat
    and quality against its base model; exits 3 when a gate fails.

    ARTIFACT is a quantkit artifact folder, a Hugging Face model folder, a .gguf file, bundled:NAME
    or a hub repo id."""
    load = {k: flags.pop(k) for k in list(flags) if k in URL_PARAMS}
    if url:  # a serving load test (quantkit.benchmark.loadtest) instead of an artifact benchmark
        from quantkit.cli import bench_url

        return bench_url.run(url, json_file=json_file, **load)
    if not artifact:
        raise click.UsageError("give an ARTIFACT to benchmark (or --url URL)")
    from quantkit.benchmark.bench import bench
    from quantkit.cli.settings_flags import typed_settings
    from quantkit.core.errors import GateFailed
    from quantkit.core.metrics import gated

    options = bench_options(typed_settings(click.get_current_context(), flags))
    from quantkit.cli.render import console
    from quantkit.core.events import listen

    with console.status("loading") as status, listen(lambda e: e.step and status.update(STEP_TEXT.get(e.step, e.step))):
        result = bench(artifact, base=base, options=options)
    data = result.to_dict()
    if serving_engine:
        from quantkit.benchmark.serving import serving_bench

        with console.status(f"load-testing {serving_engine}"):
            data["serving"] = [
                serving_bench(
                    result.artifact,
                    serving_engine,
                    load["concurrency"] or (1, 4, 8),
                    load["num_requests"],
                    load["max_tokens"],
                    threads=options.threads,
                    n_gpu_layers=options.n_gpu_layers,
                    device=options.device,
                    tensor_parallel=tensor_parallel,
                    pipeline_parallel=pipeline_parallel,
                )
            ]
    render(data)
    if json_file:
        from quantkit.core.atomic import write_json

        write_json(json_file, data, ensure_ascii=False)
        click.echo(json_file)
    if result.verdict == "failed":  # unvalidated is not a failure here; push refuses it (docs/gates.md)
        raise GateFailed(
            f"{len(result.failures)} gate(s) failed: {result.failures[0]}",
            hint="see the table; thresholds: " + ", ".join(m.gate.flag for m in gated()),
        )


STEP_TEXT = {
    "base": "base model: logits and smoke (cached after the first run)",
    "load": "loading the model",
    "speed": "timing prefill and decode",
    "smoke": "smoke (3 turns)",
    "quality": "quality against the base model",
}


# Metrics the rows below present in their own composite way (pp with its prompt length, PPL beside
# the base's); every other declared metric gets a generic row.
SHOWN = {
    *("bits_per_weight", "prefill_tokens_per_s", "decode_tokens_per_s", "ttft_ms", "peak_rss_mb"),
    *("kld_mean", "kld_p99", "top1_agreement", "ppl_ratio"),
}


def render(data: dict) -> None:
    from rich.markup import escape
    from rich.table import Table

    from quantkit.cli.render import console
    from quantkit.core import metrics

    table = Table(title=f"quantkit bench: {data['artifact']}", show_header=False, title_justify="left")
    add = table.add_row
    add("engine / bits", f"{data['engine']} / {data['bits']} (bpw {data['bits_per_weight']})")
    add("size", f"{data['size_bytes'] / 2**20:.1f} MiB")
    add("load", f"{data['load_s']:.2f} s, peak RSS {data['load_peak_rss_mb']} MB")
    add(f"pp{data['prompt_tokens']}", f"{data['prefill_tokens_per_s']:.1f} ± {data['prefill_tokens_per_s_std']:.1f} tok/s")
    add(f"tg{data['gen_tokens']}", f"{data['decode_tokens_per_s']:.1f} ± {data['decode_tokens_per_s_std']:.1f} tok/s")
    add("TTFT", f"{data['ttft_ms']:.1f} ± {data['ttft_ms_std']:.1f} ms")
    add("decode latency", " / ".join(f"{k} {v:.1f} ms" for k, v in data["decode_latency_ms"].items()))
    add("peak RSS (runs)", f"{data['peak_rss_mb']} MB")
    bw = data["bandwidth"]
    add(
        "bandwidth",
        f"{bw['achieved_gbps']} GB/s" + (f" = {bw['fraction']:.0%} of copy {bw['copy_gbps']} GB/s" if bw["fraction"] else ""),
    )
    for key, value in data["cuda"].items():
        add(key, str(value))
    smoke = data["smoke"]
    if smoke:
        verdict = "[green]pass[/]" if smoke["passed"] else "[red]FAIL[/]"
        add(smoke.get("title", "smoke chat"), verdict + (" (against the base's replies)" if smoke.get("base") else " (no base)"))
        for line in [f"the base shows it too: {e}" for e in smoke.get("excused", [])] + smoke.get("notes", []):
            add("smoke note", escape(line))
    q = data["quality"]
    if q and q.get("kld_mean") is not None:
        add("PPL / base", f"{q['ppl']} / {q['base_ppl']} (ratio {q['ppl_ratio']})")
        add("KLD mean / p99", f"{q['kld_mean']} / {q['kld_p99']}")
        add("same top token", f"{q['top1_agreement']:.1%}")
        add("RMS Δp", f"{q['rms_dp']:.2%}")
    elif q:
        add("quality", "[red]tokenizer differs from the base[/]")
    for m in metrics.METRICS:  # any other declared metric: a row of its own (quantkit.core.metrics)
        if m.name not in SHOWN and m.of(data) is not None:
            add(m.label, m.cell(data) + (f" {m.unit}" if m.unit and not m.suffix else ""))
    for note in data["notes"]:
        add("note", escape(note))
    for serving in data.get("serving") or []:
        for level in serving["results"]:
            add(
                f"{serving['engine']} c={level['concurrency']}",
                f"{level['output_throughput']:.1f} tok/s, TTFT p50 {level['ttft_ms']['median']} ms, "
                f"TPOT p50 {level['tpot_ms']['median']} ms ({level['errors']} errors)",
            )
    if data.get("speed_tool"):
        add("pp/tg from", escape(data["speed_tool"]["command"]))
    verdict = data.get("verdict", "passed" if data["passed"] else "failed")
    if verdict == "unvalidated":
        add("gates", "[yellow]unvalidated[/]: " + escape("; ".join(data.get("unvalidated") or [])))
    else:
        add("gates", "[green]passed[/]" if verdict == "passed" else "[red]" + escape("\n".join(data["failures"])) + "[/]")
    if smoke:
        console.print(transcript_view(smoke))
    console.print(table)


def transcript_view(smoke: dict):
    """The artifact's transcript, beside the base's turn by turn when it was judged against it."""
    from rich.panel import Panel
    from rich.table import Table
    from rich.text import Text

    title = f"{smoke.get('title', 'smoke chat')} transcript"
    base = smoke.get("base")
    if not base:
        return Panel(Text(smoke["transcript"]), title=title)
    view = Table(title=title, title_justify="left", show_lines=True)
    for column in ("#", "prompt" if smoke.get("mode") == "completion" else "user", "artifact", "base"):
        view.add_column(column, overflow="fold")
    base_turns = base.get("turns") or []
    for i, turn in enumerate(smoke["turns"]):
        other = base_turns[i] if i < len(base_turns) else {}
        cells = [Text(t.get("reply", "")) for t in (turn, other)]
        for text, t in zip(cells, (turn, other)):
            if t.get("problems"):
                text.append("\n" + "; ".join(t["problems"]), style="red")
        view.add_row(str(i + 1), Text(turn["user"]), *cells)
    return view
