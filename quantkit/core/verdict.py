"""A bench result's verdict: passed, failed or unvalidated. Unvalidated is not passed: an
artifact whose quality was never compared with its base, or whose smoke chat was skipped, has
not shown that it still talks like its base, so pick, push and cards do not treat it as passed.

Kept in core because cards (core), push (hub), report (benchmark) and pick/run (pipeline) all
read stored results; ``quantkit.benchmark.result.BenchResult`` computes the same thing."""

VERDICTS = ("passed", "failed", "unvalidated")
VERDICT_CELL = {"passed": "passed", "failed": "**failed**", "unvalidated": "*unvalidated*"}  # Markdown tables


def unvalidated_reasons(base, smoke: dict | None, quality: dict | None, gates: dict | None = None) -> list[str]:
    """Why a result with no failed gate still is not validated (empty: it is)."""
    reasons = []
    if quality is None:
        reasons.append("no base model: quality not compared" if not base else "quality skipped")
    if smoke is None:
        reasons.append("smoke chat skipped")
    elif (gates or {}).get("smoke") is False:
        reasons.append("smoke chat not gated")
    return reasons


def verdict_of(result: dict) -> str:
    """The verdict of a stored result; one written before verdicts existed (``passed`` only) is
    judged from what it holds, so an old "passed" with no quality reads as unvalidated."""
    if result.get("failures"):
        return "failed"
    if result.get("verdict") in VERDICTS:
        return result["verdict"]
    if result.get("passed") is False:
        return "failed"
    return "unvalidated" if held_reasons(result) else "passed"


def held_reasons(result: dict) -> list[str]:
    """unvalidated_reasons of a bench result, or of a card's record of one (flat ``kld_mean``)."""
    quality = result.get("quality")
    if quality is None and result.get("kld_mean") is not None:
        quality = {"kld_mean": result["kld_mean"]}
    base = result.get("base") or quality is not None
    return unvalidated_reasons(base, result.get("smoke"), quality, result.get("gates"))


def reasons_of(result: dict) -> list[str]:
    """Why ``result`` is unvalidated (its stored reasons, else worked out from what it holds)."""
    if result.get("unvalidated"):
        return list(result["unvalidated"])
    return held_reasons(result) if verdict_of(result) == "unvalidated" else []


def overall(results: list[dict] | None) -> str | None:
    """One verdict for an artifact's results (a GGUF folder has one per file): failed beats
    unvalidated beats passed; None when it has none."""
    if not results:
        return None
    verdicts = {verdict_of(r) for r in results}
    return next(v for v in ("failed", "unvalidated", "passed") if v in verdicts)
