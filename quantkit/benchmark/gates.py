"""Validation gates: the smoke chat must pass and quality must stay within thresholds chosen per
bit width from measured data (docs/gates.md). Every threshold can be overridden: ``Gates`` is
what a user asks (a recipe's ``gates:``, bench's ``--max-kld``...), declared once; ``Thresholds``
what applies to one artifact once its width's defaults fill the gaps."""

from dataclasses import asdict, make_dataclass

from quantkit.core import metrics
from quantkit.core.settings import option


def _overrides(self) -> dict:
    """The thresholds given, by name."""
    return {k: v for k, v in asdict(self).items() if k != "smoke" and v is not None}


# What an artifact must meet: one field per declared gate (quantkit.core.metrics), so its flag,
# recipe key and API parameter come from the metric's declaration. A threshold left None takes
# the default for the artifact's bit width; smoke false reports the smoke chat without gating on it.
Gates = make_dataclass(
    "Gates",
    [("smoke", bool, option(True, "Gate on the smoke chat (false: report it only).", cli=False))]
    + [
        (
            m.gate.option,
            float | None,
            option(None, m.gate.help, minimum=m.gate.minimum, maximum=m.gate.maximum, flag=m.gate.flag),
        )
        for m in metrics.gated()
    ],
    namespace={"overrides": _overrides, "__doc__": "What an artifact must meet (one threshold per declared gate)."},
)
Gates.__module__ = __name__


class Thresholds(dict):
    """The thresholds that apply to one artifact, by gate option name (``kld_mean_max``...), also
    readable as attributes."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def to_dict(self) -> dict:
        return dict(self)


def gates_for(bits: int, overrides: "Gates | dict | None" = None) -> Thresholds:
    """Each declared gate's default for the nearest width at or below ``bits``, with ``overrides`` applied."""
    defaults = {m.gate.option: m.gate.default(bits) for m in metrics.gated()}
    given = (
        overrides.overrides() if isinstance(overrides, Gates) else {k: v for k, v in (overrides or {}).items() if v is not None}
    )
    unknown = set(given) - set(defaults)
    if unknown:
        from quantkit.core.errors import InputError

        raise InputError(f"unknown gate(s): {', '.join(sorted(unknown))}", hint=f"use {', '.join(defaults)}")
    return Thresholds({**defaults, **given})


def check(gates: Thresholds, smoke: dict | None, quality: dict | None, measured: dict | None = None) -> list[str]:
    """Every gate that failed, as one readable line each (empty: all passed). ``measured``: the bench
    result, for gated metrics kept at its top level."""
    failures = []
    if smoke is not None and not smoke.get("passed"):
        # The smoke's own verdict: judged against the base's replies when it has them (quantkit.benchmark.smoke).
        kind = "completion smoke" if smoke.get("mode") == "completion" else "smoke"
        failures += [f"{kind}: {f}" for f in smoke.get("failures", [])] or [f"{kind}: failed"]
    if quality is not None:
        failures += [f"quality: {f}" for f in quality.get("failures", [])]
        if quality.get("tokenizer_parity") and quality.get("kld_mean") is not None:
            failures += _past(gates, [m for m in metrics.gated() if m.section == "quality"], quality, "quality")
    if measured is not None:  # the result's own top-level metrics (none of the built-in ones is gated)
        failures += _past(gates, [m for m in metrics.gated() if m.section is None], measured, "bench")
    return failures


def _past(gates: Thresholds, gated: list, values: dict, where: str) -> list[str]:
    """A line per declared gate its metric's value is past (a metric not measured is not gated)."""
    lines = []
    for m in gated:
        value, limit = values.get(m.name), gates.get(m.gate.option)
        if value is not None and limit is not None and m.failed(value, limit):
            lines.append(f"{where}: {m.name} {value} {'<' if m.higher_is_better else '>'} {limit}")
    return lines
