"""Bench in the deployment engine: ``quantkit bench ARTIFACT --engine llama-server|vllm`` starts that
server on the artifact (quantkit.engines.servers' table, the settings ``quantkit serve`` would choose)
and load-tests it with quantkit's one load generator (quantkit.benchmark.loadtest: TTFT, TPOT,
throughput as vLLM's ``bench serve`` defines them) at the given concurrencies, every request
generating exactly ``max_tokens`` (ignore_eos), so the numbers sit beside the in-process ones."""

from dataclasses import dataclass
from pathlib import Path

from quantkit.core.settings import option
from quantkit.engines.servers import SERVERS

COLUMNS = ("artifact", "engine", "concurrency", "output tok/s", "TTFT p50 ms", "TPOT p50 ms", "E2EL p50 ms", "errors")


@dataclass
class ServingOptions:
    """A recipe's serving bench, declared once: the ``bench:`` keys that name deployment engines
    (``serving: [llama-server, vllm]``) and the load test each artifact they run gets in them."""

    serving: list[str] = option([], "Deployment engines to serve each artifact in and load-test.", choices=tuple(SERVERS))
    concurrency: list[int] = option([1, 4, 8], "Concurrent requests of each load-test level.", minimum=1, recipe_kind="list[int]")
    num_requests: int = option(16, "Requests per concurrency level.", minimum=1)
    max_tokens: int = option(64, "Tokens each request generates (ignore_eos).", minimum=1)
    tensor_parallel: int = option(1, "GPUs per pipeline stage (vLLM).", minimum=1)
    pipeline_parallel: int = option(1, "Pipeline stages (vLLM; across nodes beyond one machine).", minimum=1)

    @property
    def gpus(self) -> int:
        return self.tensor_parallel * self.pipeline_parallel


def serving_bench(
    path: Path | str,
    engine: str = "llama-server",
    concurrency: list[int] | tuple = (1, 4, 8),
    num_requests: int = 16,
    max_tokens: int = 64,
    threads: int | None = None,
    n_gpu_layers: int = 0,
    device: str = "auto",
    tensor_parallel: int = 1,
    pipeline_parallel: int = 1,
) -> dict:
    """One serving record: the engine, its command (key hidden), and one load-test result per level."""
    from quantkit.benchmark.loadtest import load_test
    from quantkit.engines.servers import choose_server, server_module

    module = server_module(engine)
    choose_server(Path(path), engine)  # refuses a format the engine does not run, or an engine not installed
    levels = sorted(set(concurrency or (1, 4, 8)))
    # One slot per concurrent request, each with room for the prompt set and the reply.
    settings = module.choose_settings(
        Path(path),
        threads=threads,
        parallel=max(levels),
        n_ctx=max(512, max_tokens + 256),
        n_gpu_layers=n_gpu_layers,
        device=device,
        tensor_parallel=tensor_parallel,
        pipeline_parallel=pipeline_parallel,
    )
    with module.Server(settings) as server:
        results = load_test(
            server.url,
            model=settings.alias,
            concurrency=levels,
            num_requests=num_requests,
            max_tokens=max_tokens,
            ignore_eos=True,
        )
    return {
        "engine": engine,
        "command": settings.shown(),
        "threads": settings.threads,
        "parallel": settings.parallel,
        **(
            {"tensor_parallel": tensor_parallel, "pipeline_parallel": pipeline_parallel}
            if tensor_parallel * pipeline_parallel > 1
            else {}
        ),
        "results": [r.to_dict() for r in results],
    }


def serving_rows(results: list[dict], name=lambda r: Path(r.get("artifact", "?")).name) -> list[list[str]]:
    rows = []
    for result in results:
        for serving in result.get("serving") or []:
            for level in serving.get("results") or []:  # none when the engine skipped the artifact
                rows.append(
                    [
                        name(result),
                        serving["engine"],
                        str(level["concurrency"]),
                        f"{level['output_throughput']:.1f}",
                        median(level["ttft_ms"]),
                        median(level["tpot_ms"]),
                        median(level["e2el_ms"]),
                        str(level["errors"]),
                    ]
                )
    return rows


def median(summary: dict) -> str:
    return "-" if summary.get("median") is None else f"{summary['median']:.1f}"


def serving_markdown(results: list[dict], name=lambda r: Path(r.get("artifact", "?")).name) -> list[str]:
    """The report's serving section: one row per artifact, engine and concurrency; [] when none ran."""
    rows = serving_rows(results, name)
    skipped = [
        f"- {s['engine']} skipped {name(r)}: {s['skipped']}" for r in results for s in r.get("serving") or [] if "skipped" in s
    ]
    if not rows and not skipped:
        return []
    lines = ["## In the deployment engine", ""]
    if rows:
        lines += ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        lines.append("")
    commands = {s["command"] for r in results for s in r.get("serving") or [] if "command" in s}
    return [*lines, *[f"`{c}`" for c in sorted(commands)], *([""] if commands else []), *skipped, *([""] if skipped else [])]
