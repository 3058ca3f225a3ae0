"""``pick(run_dir, memory)``: from a run's measured results, the artifact to deploy in a memory budget.

Rules, in order: an artifact whose build/bench failed or whose result failed its gates is never
picked, nor an unvalidated one (no base, quality or smoke skipped); the engine filter (the
runtimes each method declares for its format: ``runtimes_of``) and ``min_top1`` drop more; what remains must fit
``memory`` = weights + KV cache for ``context`` (16-bit K/V, ``estimate.kv_cache_bytes``). Weights are
the bytes measured where the artifact ran (``runtime_bytes``: dense when transformers dequantized it)
when that engine is the one asked for, else the weight files' size. Among those that fit, the lowest
KLD mean wins, except that every result within ``NEAR`` of it is a near-equal and the fastest
decode (tg tok/s) among near-equals is picked.
"""

from dataclasses import asdict, dataclass, field
from pathlib import Path

from quantkit.core.atomic import read_json
from quantkit.core.errors import InputError
from quantkit.core.metrics import metric
from quantkit.core.verdict import reasons_of, verdict_of

NEAR_RELATIVE, NEAR_ABSOLUTE = 0.10, 0.005  # near-equal: KLD <= best + max(10% of best, 0.005)
DEFAULT_CONTEXT = 4096
UNITS = {
    "": 1,
    "B": 1,
    "KB": 1000,
    "MB": 1000**2,
    "GB": 1000**3,
    "TB": 1000**4,
    "KIB": 2**10,
    "MIB": 2**20,
    "GIB": 2**30,
    "TIB": 2**40,
}


def parse_memory(text: str | int) -> int:
    """ "6GiB", "6GB", "6000MiB", "6 G" (binary for a bare letter) or a byte count -> bytes."""
    import re

    if isinstance(text, int):
        return text
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([A-Za-z]*)\s*", str(text))
    unit = match.group(2).upper() if match else ""
    unit = unit + "IB" if unit in ("K", "M", "G", "T") else unit
    if not match or unit not in UNITS:
        raise InputError(f"cannot read memory size {text!r}", hint="write it like 6GiB, 6GB or 6000MiB")
    return int(float(match.group(1)) * UNITS[unit])


def gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB"


@dataclass
class Candidate:
    name: str
    method: str | None
    format: str | None
    engine: str | None  # where it was benched
    weights_bytes: int
    weights_source: str  # "measured runtime" | "file size"
    kv_bytes: int
    kld_mean: float | None
    top1: float | None
    tg: float | None  # decode tokens/s
    size_bytes: int
    status: str = "candidate"  # picked | lost
    reason: str = ""

    @property
    def need_bytes(self) -> int:
        return self.weights_bytes + self.kv_bytes


@dataclass
class Pick:
    chosen: Candidate
    others: list[Candidate]
    memory_bytes: int
    context: int
    engine: str | None
    min_top1: float | None
    kv_note: str
    plot: Path | None = None
    all: list[Candidate] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "pick": asdict(self.chosen) | {"need_bytes": self.chosen.need_bytes},
            "others": [asdict(c) | {"need_bytes": c.need_bytes} for c in self.others],
            "memory_bytes": self.memory_bytes,
            "context": self.context,
            "engine": self.engine,
            "min_top1": self.min_top1,
            "kv_cache": self.kv_note,
            "plot": str(self.plot) if self.plot else None,
            "near_equal": {"relative": NEAR_RELATIVE, "absolute": NEAR_ABSOLUTE},
        }


def load_run(run_dir: Path) -> dict:
    file = run_dir / "results.json"
    if not file.is_file():
        raise InputError(f"{run_dir} has no results.json", hint="give the folder of a finished `quantkit run`")
    return read_json(file)


def run_config(run_dir: Path, data: dict) -> tuple[dict | None, str]:
    """The model's config.json: the run's model stage folder, an artifact folder, or the offline caches."""
    from quantkit.core.estimate import find_config

    record = run_dir / "stages" / "model.json"
    places = []
    if record.is_file():
        places.append(Path(read_json(record).get("path", "")) / "config.json")
    places += [Path(a["path"]) / "config.json" for a in data.get("artifacts", []) if a.get("path")]
    for path in places:
        if path.is_file():
            return read_json(path), str(path)
    config, where = find_config(str(data.get("model") or ""), "hf", None, None)
    return config, where


def artifact_manifest(outcome: dict) -> dict:
    from quantkit.core.manifest import read_manifest

    path = outcome.get("path")
    return (read_manifest(path) if path and Path(path).exists() else None) or {}


def runtimes_of(method: str | None, fmt: str | None, manifest: dict) -> set[str]:
    """Where the artifact runs: its manifest's record of the method's declaration (else what the
    registered method declares for that format today), and every registered engine that declares
    the format among those it runs (quantkit.engines)."""
    from quantkit.engines import ENGINES
    from quantkit.quantization.registry import format_facts

    if manifest.get("runtimes"):
        declared = set(manifest["runtimes"])
    else:
        facts = format_facts(method, fmt)
        declared = set(facts.runtimes) if facts else set()
    return declared | {name for name, entry in ENGINES.items() if fmt in entry.formats}


def engines() -> list[str]:
    """Every runtime some registered method declares and every registered engine (pick's --engine choices)."""
    from quantkit.engines import ENGINES
    from quantkit.quantization.registry import engine_formats

    return sorted(set(engine_formats()) | set(ENGINES))


def candidates(data: dict, kv: int, engine: str | None) -> tuple[list[Candidate], list[Candidate]]:
    """(pickable, excluded-with-reason) from results.json."""
    ok, out = [], []
    from quantkit.quantization.registry import default_format

    for a in data.get("artifacts", []):
        manifest = artifact_manifest(a)
        fmt = manifest.get("format") or default_format(a.get("method"))
        if a.get("status") == "failed" or not a.get("results"):
            why = f"failed build: {a.get('failed_stage') or '?'} stage: {a.get('error') or 'no results'}"
            out.append(Candidate(a["name"], a.get("method"), fmt, None, 0, "-", kv, None, None, None, 0, "lost", why))
            continue
        for r in a["results"]:
            measured = r.get("runtime_bytes") and (engine is None or r.get("engine") == engine)
            weights = int(r["runtime_bytes"] if measured else r.get("weights_bytes") or r["size_bytes"])
            c = Candidate(
                r.get("name") or a["name"],
                a.get("method"),
                fmt,
                r.get("engine"),
                weights,
                "measured runtime" if measured else "file size",
                kv,
                metric("kld_mean").of(r),  # where each lives in a result: its declaration's (quantkit.core.metrics)
                metric("top1_agreement").of(r),
                metric("decode_tokens_per_s").of(r),
                int(r.get("size_bytes") or 0),
            )
            verdict = verdict_of(r)
            if verdict == "failed":
                c.status, c.reason = "lost", "failed gate: " + "; ".join(r.get("failures") or ["not passed"])
            elif verdict == "unvalidated":
                c.status, c.reason = "lost", "unvalidated: " + "; ".join(reasons_of(r))
            elif engine and engine not in runtimes_of(a.get("method"), fmt, manifest):
                c.status, c.reason = "lost", f"wrong engine: {fmt} is not served by {engine}"
            (out if c.status == "lost" else ok).append(c)
    return ok, out


def pick(
    run_dir: str | Path,
    memory: str | int,
    engine: str | None = None,
    min_top1: float | None = None,
    context: int = DEFAULT_CONTEXT,
    plot: bool = True,
) -> Pick:
    """The artifact of ``run_dir`` to deploy in ``memory`` (bytes or "6GiB"); see the module doc."""
    if engine is not None and engine not in engines():
        raise InputError(f"unknown engine {engine!r}", hint=f"choose {', '.join(engines())}")
    run_dir = Path(run_dir).expanduser()
    budget = parse_memory(memory)
    data = load_run(run_dir)
    config, where = run_config(run_dir, data)
    from quantkit.core.estimate import kv_cache_bytes

    kv = kv_cache_bytes(config, context) if config else 0
    kv_note = f"{gib(kv)} for {context} tokens (16-bit K/V, {where})" if config else f"not counted: {where}"
    ok, lost = candidates(data, kv, engine)
    if min_top1 is not None:
        for c in list(ok):
            if c.top1 is None or c.top1 < min_top1:
                c.status, c.reason = "lost", f"top-1 {fmt_pct(c.top1)} < {fmt_pct(min_top1)}"
                ok.remove(c)
                lost.append(c)
    fits = []
    for c in ok:
        if c.need_bytes > budget:
            c.status, c.reason = "lost", f"too big: needs {gib(c.need_bytes)} > {gib(budget)}"
            lost.append(c)
        else:
            fits.append(c)
    if not fits:
        sized = [c for c in ok]
        hint = (
            f"the smallest eligible, {min(sized, key=lambda c: c.need_bytes).name}, needs {gib(min(c.need_bytes for c in sized))}"
            if sized
            else "no artifact passed the filters"
        )
        raise InputError(f"no artifact of {run_dir} fits {gib(budget)} with a {context}-token context", hint=hint)
    chosen = choose(fits)
    others = [c for c in fits if c is not chosen]
    for c in others:
        c.status = "lost"
        c.reason = (
            f"slower: tg {fmt_num(c.tg)} vs {fmt_num(chosen.tg)} tok/s (KLD near-equal)"
            if near(c, chosen)
            else f"worse quality: KLD {fmt_num(c.kld_mean, 4)} vs {fmt_num(chosen.kld_mean, 4)}"
        )
    chosen.status, chosen.reason = "picked", "best quality that fits" + ("" if len(fits) == 1 else ", fastest among near-equals")
    result = Pick(chosen, others + lost, budget, context, engine, min_top1, kv_note, all=fits + lost)
    if plot:
        result.plot = plot_frontier(result, run_dir / "pick.png")
    return result


def near(c: Candidate, best: Candidate) -> bool:
    if c.kld_mean is None or best.kld_mean is None:
        return c.kld_mean is None and best.kld_mean is None
    return c.kld_mean <= best.kld_mean + max(NEAR_RELATIVE * best.kld_mean, NEAR_ABSOLUTE)


def choose(fits: list[Candidate]) -> Candidate:
    """Lowest KLD (unmeasured last); then the fastest within NEAR of it; then the smallest."""
    best = min(fits, key=lambda c: (c.kld_mean is None, c.kld_mean or 0.0))
    equals = [c for c in fits if near(c, best)]
    return max(equals, key=lambda c: (c.tg or 0.0, -c.need_bytes))


def fmt_num(value, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def fmt_pct(value) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


def plot_frontier(result: Pick, file: Path) -> Path | None:
    """Need (GiB) vs KLD, marker area by decode speed, the pick ringed, the budget a line."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    points = [c for c in result.all if c.kld_mean is not None and c.need_bytes]
    if not points:
        return None
    fastest = max((c.tg or 0.0) for c in points) or 1.0
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=110)
    for c in points:
        color = "tab:green" if c is result.chosen else ("tab:blue" if c.reason.startswith(("slower", "worse")) else "tab:gray")
        ax.scatter(c.need_bytes / 2**30, c.kld_mean, s=30 + 200 * (c.tg or 0.0) / fastest, color=color, alpha=0.7)
        ax.annotate(
            f"{c.name} ({fmt_num(c.tg)} tg)",
            (c.need_bytes / 2**30, c.kld_mean),
            fontsize=7,
            xytext=(4, 3),
            textcoords="offset points",
        )
    chosen = result.chosen
    if chosen.kld_mean is not None:
        ax.scatter(chosen.need_bytes / 2**30, chosen.kld_mean, s=400, facecolors="none", edgecolors="red", label="pick")
    ax.axvline(result.memory_bytes / 2**30, color="red", linestyle="--", linewidth=1, label="budget")
    ax.set_xlabel(f"memory need: weights + KV cache for {result.context} tokens (GiB)")
    ax.set_ylabel("mean KLD vs base (marker size: decode tok/s)")
    if all(c.kld_mean > 0 for c in points):
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(file)
    plt.close(fig)
    return file
