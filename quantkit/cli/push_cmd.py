import click


@click.command(
    "push",
    epilog="""\b
Examples:
  quantkit push ./smollm2-135m-instruct-gguf acme/SmolLM2-135M-Instruct-GGUF --dry-run
  quantkit push ./runs/smollm2/artifacts/nf4 acme/SmolLM2-135M-Instruct-nf4 --private
  quantkit push ./qwen-awq acme/Qwen2.5-0.5B-AWQ --source modelscope --revision v1
  HF_ENDPOINT=https://hub.internal quantkit push ./artifact team/model --token hf_xxx""",
)
@click.argument("artifact", type=click.Path(exists=True, file_okay=False))
@click.argument("repo_id")
@click.option(
    "--source", type=click.Choice(["hf", "modelscope"]), default="hf", show_default=True, help="Which hub to publish to."
)
@click.option("--private", is_flag=True, help="Create the repo private (an existing repo keeps its visibility).")
@click.option("--revision", help="Branch to commit to, created when missing (default: main on hf, master on modelscope).")
@click.option("--token", help="Write token (default: HF_TOKEN / MODELSCOPE_API_TOKEN).")
@click.option("--endpoint", help="Hub URL (default: HF_ENDPOINT / MODELSCOPE_ENDPOINT or the official hub).")
@click.option("--dry-run", is_flag=True, help="List what would be uploaded and print the card; send nothing.")
@click.option("--allow-failed", is_flag=True, help="Publish an artifact that failed its gates (said in its card).")
@click.option(
    "--allow-unvalidated",
    is_flag=True,
    help="Publish an unvalidated artifact: never benchmarked, no base, quality or smoke skipped (said in its card).",
)
def command(artifact, repo_id, source, private, revision, token, endpoint, dry_run, allow_failed, allow_unvalidated):
    """Publish ARTIFACT (verified against quantkit.json, gates passed against its base) to REPO_ID with a model card
    that carries its measured results. Run it again to resume an interrupted upload."""
    from quantkit.core.modelinfo import human_size
    from quantkit.hub.push import push

    result = push(
        artifact,
        repo_id,
        source=source,
        private=private,
        revision=revision,
        token=token,
        endpoint=endpoint,
        dry_run=dry_run,
        allow_failed=allow_failed,
        allow_unvalidated=allow_unvalidated,
    )
    plan = result.plan
    if dry_run:
        for f in plan.files:
            click.echo(f"{human_size(f.size):>10}  {f.path}{'' if f.local else '  (written for the repo)'}")
        for name in plan.skipped:
            click.echo(f"{'skipped':>10}  {name}")
        click.echo(
            f"{human_size(plan.total_bytes):>10}  total, {len(plan.files)} files to {plan.source}:{plan.repo_id}"
            f"@{plan.revision} (dry run: nothing uploaded)"
        )
        click.echo(f"commit message: {plan.commit_message}")
        click.echo("--- README.md ---")
        click.echo(plan.card)
        return
    if plan.verdict != "passed":
        what = "failed its gates" if plan.verdict == "failed" else "is unvalidated"
        click.echo(f"warning: published {plan.repo_id} although it {what}: {'; '.join(plan.why)}", err=True)
    click.echo(
        f"pushed {len(plan.files)} files ({human_size(plan.total_bytes)}) to {plan.source}:{plan.repo_id}"
        f"@{plan.revision}" + (f", commit {result.commit[:12]}" if result.commit else ""),
        err=True,
    )
    click.echo(result.url)
