import json

import click


@click.command(
    "doctor",
    epilog="""\b
Examples:
  quantkit doctor                 # Markdown, ready to paste into a bug report
  quantkit doctor --json > env.json
  quantkit doctor --no-smoke      # the facts only, no engine run""",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--no-smoke", is_flag=True, help="Skip the live smoke of each engine (each runs in a child process).")
def command(as_json, no_smoke):
    """What this machine and install are (OS, CPU features incl. AVX-512/AMX, RAM, GPU and driver,
    torch, bitsandbytes, how llama.cpp was built, library versions, caches, hubs) and whether each
    engine runs here. Exits 1 when an engine crashed or failed its smoke."""
    from quantkit.doctor.environment import doctor

    report = doctor(smoke=not no_smoke)
    click.echo(json.dumps(report, indent=1) if as_json else markdown(report))
    broken = {name: r for name, r in report.get("smoke", {}).items() if r["status"] in ("crash", "error")}
    if broken:
        click.echo("; ".join(f"{name}: {r['message']}" for name, r in broken.items()), err=True)
        raise SystemExit(1)


def markdown(report: dict) -> str:
    """The report as Markdown sections of `- key: value` lines, for an issue."""
    lines = ["### quantkit doctor", "", f"- quantkit: {report['quantkit']}"]
    for section, body in report.items():
        if not isinstance(body, dict):
            continue
        lines += ["", f"#### {section}", ""]
        for key, value in body.items():
            lines.append(f"- {key}: {value_text(value)}")
    return "\n".join(lines)


def value_text(value) -> str:
    if isinstance(value, dict):
        if "status" in value:  # a smoke: its verdict first
            rest = {k: v for k, v in value.items() if k != "status"}
            return f"**{value['status']}** " + ", ".join(f"{k}={v}" for k, v in rest.items())
        return ", ".join(f"{k}={v}" for k, v in value.items())
    if isinstance(value, list):
        return ", ".join(map(str, value)) or "none"
    return str(value)
