"""Validation gates: the smoke chat must pass and quality must stay within thresholds chosen per
bit width from measured data (docs/gates.md). Every threshold can be overridden: ``Gates`` is
what a user asks (a recipe's ``gates:``, bench's ``--max-kld``...), declared once; ``Thresholds``
what applies to one artifact once its width's defaults fill the gaps."""

from dataclasses import asdict, dataclass, replace

from quantkit.core.settings import option


@dataclass
class Gates:
    """What an artifact must meet. A threshold left None takes the default for the artifact's bit
    width (DEFAULT_GATES); smoke false reports the smoke chat without gating on it."""

    smoke: bool = option(True, "Gate on the smoke chat (false: report it only).", cli=False)
    top1_min: float | None = option(None, "Gate: lowest same-top-token share, 0-1.", minimum=0.0, maximum=1.0, flag="--min-top1")
    kld_mean_max: float | None = option(
        None, "Gate: highest mean KL divergence (default per bit width).", minimum=0.0, flag="--max-kld"
    )
    kld_p99_max: float | None = option(None, "Gate: highest 99th-percentile KL divergence.", minimum=0.0, flag="--max-kld-p99")
    ppl_ratio_max: float | None = option(None, "Gate: highest perplexity ratio to the base.", minimum=1.0, flag="--max-ppl-ratio")

    def overrides(self) -> dict:
        """The thresholds given, by name."""
        return {k: v for k, v in asdict(self).items() if k != "smoke" and v is not None}


@dataclass(frozen=True)
class Thresholds:
    kld_mean_max: float
    kld_p99_max: float
    top1_min: float  # share of positions whose top token matches the base's
    ppl_ratio_max: float

    def to_dict(self) -> dict:
        return asdict(self)


# From measurements on SmolLM2-135M-Instruct (docs/gates.md): each width's worst measured artifact
# with headroom (small models lose more than large ones at the same width), while a zeroed layer
# (KLD 8.6, top-1 2 %) or a swapped tokenizer fails by a wide margin.
DEFAULT_GATES: dict[int, Thresholds] = {
    16: Thresholds(kld_mean_max=0.01, kld_p99_max=0.1, top1_min=0.95, ppl_ratio_max=1.02),
    8: Thresholds(kld_mean_max=0.04, kld_p99_max=0.4, top1_min=0.90, ppl_ratio_max=1.05),
    6: Thresholds(kld_mean_max=0.08, kld_p99_max=0.6, top1_min=0.88, ppl_ratio_max=1.08),
    5: Thresholds(kld_mean_max=0.20, kld_p99_max=1.5, top1_min=0.75, ppl_ratio_max=1.30),
    4: Thresholds(kld_mean_max=0.40, kld_p99_max=3.0, top1_min=0.60, ppl_ratio_max=1.60),
    3: Thresholds(kld_mean_max=0.60, kld_p99_max=5.0, top1_min=0.55, ppl_ratio_max=2.0),
    2: Thresholds(kld_mean_max=1.00, kld_p99_max=8.0, top1_min=0.45, ppl_ratio_max=3.0),
}


def gates_for(bits: int, overrides: "Gates | dict | None" = None) -> Thresholds:
    """The default thresholds of the nearest width at or below ``bits``, with ``overrides`` applied."""
    width = max((w for w in DEFAULT_GATES if w <= bits), default=2)
    given = (
        overrides.overrides() if isinstance(overrides, Gates) else {k: v for k, v in (overrides or {}).items() if v is not None}
    )
    unknown = set(given) - set(Thresholds.__dataclass_fields__)
    if unknown:
        from quantkit.core.errors import InputError

        raise InputError(
            f"unknown gate(s): {', '.join(sorted(unknown))}", hint=f"use {', '.join(Thresholds.__dataclass_fields__)}"
        )
    return replace(DEFAULT_GATES[width], **given)


def check(gates: Thresholds, smoke: dict | None, quality: dict | None) -> list[str]:
    """Every gate that failed, as one readable line each (empty: all passed)."""
    failures = []
    if smoke is not None and not smoke.get("passed"):
        # The smoke's own verdict: judged against the base's replies when it has them (quantkit.benchmark.smoke).
        kind = "completion smoke" if smoke.get("mode") == "completion" else "smoke"
        failures += [f"{kind}: {f}" for f in smoke.get("failures", [])] or [f"{kind}: failed"]
    if quality is not None:
        failures += [f"quality: {f}" for f in quality.get("failures", [])]
        if quality.get("tokenizer_parity") and quality.get("kld_mean") is not None:
            limits = (
                ("kld_mean", quality["kld_mean"] > gates.kld_mean_max, f"> {gates.kld_mean_max}"),
                ("kld_p99", quality["kld_p99"] > gates.kld_p99_max, f"> {gates.kld_p99_max}"),
                ("top1_agreement", quality["top1_agreement"] < gates.top1_min, f"< {gates.top1_min}"),
                ("ppl_ratio", quality["ppl_ratio"] > gates.ppl_ratio_max, f"> {gates.ppl_ratio_max}"),
            )
            failures += [f"quality: {name} {quality[name]} {limit}" for name, failed, limit in limits if failed]
    return failures
