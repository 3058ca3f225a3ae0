import click


@click.command(
    "download",
    epilog="""\b
Examples:
  quantkit download HuggingFaceTB/SmolLM2-135M-Instruct
  quantkit download Qwen/Qwen2.5-0.5B-Instruct --revision main --include '*.json' --include '*.safetensors'
  quantkit download qwen/Qwen2.5-0.5B-Instruct --source modelscope --dry-run
  quantkit download meta-llama/Llama-3.2-1B --token hf_xxx --local-dir ./llama-3.2-1b
  HF_ENDPOINT=https://hf-mirror.com quantkit download HuggingFaceTB/SmolLM2-135M-Instruct
  quantkit download bundled:smollm2-135m-instruct""",
)
@click.argument("repo_id")
@click.option(
    "--source", type=click.Choice(["hf", "modelscope"]), default="hf", show_default=True, help="Which hub to fetch from."
)
@click.option("--revision", help="Branch, tag or commit (default: main on hf, master on modelscope).")
@click.option("--include", multiple=True, metavar="GLOB", help="Fetch only matching files (repeatable).")
@click.option("--exclude", multiple=True, metavar="GLOB", help="Skip matching files (repeatable).")
@click.option("--local-dir", type=click.Path(file_okay=False), help="Put the files here instead of the hub cache.")
@click.option("--token", help="Access token (default: HF_TOKEN / MODELSCOPE_API_TOKEN).")
@click.option("--endpoint", help="Hub or mirror URL (default: HF_ENDPOINT / MODELSCOPE_ENDPOINT or the official hub).")
@click.option("--dry-run", is_flag=True, help="List the files and total size; download nothing.")
@click.option("--allow-pickle", is_flag=True, help="Also fetch pickle weights (.bin/.pt), which can run code when loaded.")
def command(repo_id, source, revision, include, exclude, local_dir, token, endpoint, dry_run, allow_pickle):
    """Fetch REPO_ID (or bundled:NAME), verify every file, print its local folder as the last line."""
    from quantkit.hub.download import download

    result = download(
        repo_id,
        source=source,
        revision=revision,
        include=list(include),
        exclude=list(exclude),
        local_dir=local_dir,
        token=token,
        endpoint=endpoint,
        dry_run=dry_run,
        allow_pickle=allow_pickle,
        on_preflight=show_preflight,
    )
    if result.offline:
        click.echo(
            f"warning: the hub is unreachable; using the verified copy of {result.repo_id}@{result.revision} "
            f"(commit {result.commit})",
            err=True,
        )
    if dry_run:
        from quantkit.core.modelinfo import human_size

        for record in result.files:
            click.echo(f"{human_size(record.size):>10}  {record.name}")
        click.echo(f"{human_size(result.total_bytes):>10}  total, {len(result.files)} files (dry run: nothing downloaded)")
    click.echo(str(result.path))


def show_preflight(result) -> None:
    """Before any weight is fetched: what the model is and how much will come (stderr)."""
    from quantkit.cli.render import console, model_table
    from quantkit.core.modelinfo import human_size

    pinned = f"@{result.revision} ({result.commit[:12]})" if result.commit else ""
    console.print(
        f"[bold]{result.repo_id}[/]{pinned} from {result.source}: {len(result.files)} files, {human_size(result.total_bytes)}"
    )
    if result.skipped_pickle:
        console.print(
            f"[yellow]skipping pickle files[/] {', '.join(result.skipped_pickle)} "
            "(safetensors present; --allow-pickle fetches them)"
        )
    if result.info is not None:
        from quantkit.quantization.registry import method_support

        result.info.support = method_support(result.info.config)
        model_table(result.info, download_bytes=result.total_bytes)
    else:
        console.print("no config.json among the selected files: architecture unknown")
