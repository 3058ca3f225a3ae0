"""Rich tables shared by the commands (presentation only)."""

from rich.console import Console
from rich.table import Table

from quantkit.core.modelinfo import ModelInfo, human_count, human_size

console = Console(stderr=True)  # tables go to stderr; stdout's last line stays the path


def model_table(info: ModelInfo, manifest: dict | None = None, download_bytes: int | None = None) -> None:
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_row("architecture", info.architecture)
    table.add_row("parameters", f"~{human_count(info.n_params)}")
    table.add_row("dtype", info.dtype)
    table.add_row("layers / hidden / vocab", f"{info.num_layers} / {info.hidden_size} / {info.vocab_size}")
    if download_bytes is not None:
        table.add_row("download size", human_size(download_bytes))
    for method, verdict in info.support.items():
        table.add_row(f"method {method}", "[green]supported[/]" if verdict is None else f"[yellow]{verdict}[/]")
    if manifest:
        table.add_row("artifact", f"{manifest.get('method')} ({manifest.get('format')}, engine {manifest.get('engine')})")
        if manifest.get("runtimes"):  # the method's declaration, recorded at quantize
            table.add_row("loads in", ", ".join(manifest["runtimes"]))
        if manifest.get("bits_per_weight"):
            table.add_row("bits per weight", str(manifest["bits_per_weight"]))
        table.add_row("size", human_size(manifest.get("size_bytes", 0)))
    console.print(table)
