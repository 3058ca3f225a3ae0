import click

from quantkit.engines import ENGINES

# Chat and serve turn flash attention on, as llama-server and llama-cli do (bench keeps it off).
CHAT_DEFAULTS = {"flash_attn": True}


def engine_flags(func):
    """The engine options chat and serve share: --engine, and one flag per EngineOptions setting
    (quantkit/engines/base.py declares them once)."""
    from dataclasses import fields

    from quantkit.core import settings as opts
    from quantkit.engines import EngineOptions

    for f in reversed(fields(EngineOptions)):
        if not f.metadata.get("cli", True):
            continue
        flag, kind = opts.flag_of(f), opts.kind_of(f).rstrip("?")
        default = CHAT_DEFAULTS.get(f.name, opts.default_of(f))
        kwargs = {"default": default, "help": f.metadata["help"], "show_default": default is not None and default is not False}
        if kind == "bool":
            decls = [flag] if default is False else [f"{flag}/--no-{flag[2:]}"]
            if default is False:
                kwargs["is_flag"] = True
        elif f.metadata.get("choices"):
            decls, kwargs["type"] = [flag], click.Choice(list(f.metadata["choices"]))
        else:
            decls, kwargs["type"] = [flag], {"int": int, "float": float}.get(kind, str)
        func = click.option(*decls, f.name, **kwargs)(func)
    return click.option("--engine", type=click.Choice(list(ENGINES)), help="Engine (default: from the artifact).")(func)


def engine_options(**flags):
    """EngineOptions from engine_flags' values (all but --engine, which picks the engine)."""
    from quantkit.engines import EngineOptions

    return EngineOptions(**flags)


@click.command(
    "chat",
    epilog="""\b
Examples:
  quantkit chat bundled:smollm2-135m-instruct
  quantkit chat ./smollm2-135m-instruct-gguf/model-Q4_K_M.gguf --system "Answer briefly."
  quantkit chat ./smollm2-135m-instruct-nf4 --max-tokens 512 --temperature 0

\b
In the chat: Enter sends; end a line with \\ to go on (or paste several lines; a line '!!!'
sends them too); /clear (or clear) forgets the history; /save FILE writes the conversation as
JSON; /quit (or quit) leaves; Ctrl-C stops a reply.""",
)
@click.argument("artifact")
@click.option("--system", help="System prompt.")
@click.option("--max-tokens", type=click.IntRange(1), default=256, show_default=True, help="Most tokens per reply.")
@click.option("--temperature", type=click.FloatRange(0, 2), default=0.7, show_default=True, help="0 = greedy.")
@click.option("--top-p", type=click.FloatRange(0, 1), default=0.9, show_default=True)
@click.option("--seed", type=int, help="Sampling seed (repeatable replies).")
@engine_flags
def command(
    artifact,
    system,
    max_tokens,
    temperature,
    top_p,
    seed,
    engine,
    **engine_settings,
):
    """Chat with ARTIFACT (an artifact folder, a .gguf file, a model folder or bundled:NAME)."""
    import signal

    from quantkit.engines import load_engine
    from quantkit.serve.chat import ChatSettings, chat_loop

    # Ctrl-C must stop a reply even when we were started with SIGINT ignored (a background job,
    # nohup, some CI shells): Python then installs no KeyboardInterrupt handler of its own.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    from quantkit.hub.model_ref import resolve_artifact

    path = resolve_artifact(artifact)
    click.echo(f"loading {path} ...", err=True)
    runner = load_engine(path, engine_options(**engine_settings), engine)
    try:
        chat_loop(runner, ChatSettings(system=system, max_tokens=max_tokens, temperature=temperature, top_p=top_p, seed=seed))
    finally:
        runner.close()
