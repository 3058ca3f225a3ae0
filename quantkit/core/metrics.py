"""Every metric quantkit reports, declared once: its result key, label, unit, direction, format,
where it shows (report, card, model-index) and an optional gate. The bench result's gates, the
terminal table, report.md, the card's table and model-index, ``pick`` and docs/bench.md's metric
table are derived from ``METRICS`` (issue 25 item 2); a new metric is one entry here."""

from dataclasses import dataclass


@dataclass(frozen=True)
class Gate:
    """A threshold on a metric: ``option`` is its name in ``Gates``/recipes, ``flag`` bench's flag,
    ``defaults`` the threshold per bit width (measured, docs/gates.md). The comparison follows the
    metric's direction: a lower-is-better metric fails above it, a higher-is-better one below."""

    option: str
    flag: str
    help: str
    defaults: dict[int, float]
    minimum: float | None = 0.0
    maximum: float | None = None

    def default(self, bits: int) -> float:
        """The nearest width's default at or below ``bits`` (the smallest width's below them all)."""
        return self.defaults[max((w for w in self.defaults if w <= bits), default=min(self.defaults))]


@dataclass(frozen=True)
class Metric:
    name: str  # the key in the bench result (in its ``quality`` dict when section is "quality")
    label: str  # the table header (report, card, terminal)
    unit: str
    higher_is_better: bool
    digits: int = 2
    scale: float = 1.0  # shown as value * scale (a 0-1 share as a percentage)
    suffix: str = ""
    section: str | None = None  # None: a top-level key of the bench result
    std: bool = False  # shown as mean ± ``{name}_std``
    short: str | None = None  # report.md's narrower header, when it has one
    report: bool = True
    card: bool = True
    model_index: tuple[str, str] | None = None  # (metric_type, metric_name) on the Hub
    description: str = ""
    gate: Gate | None = None

    def of(self, result: dict, key: str | None = None):
        """The value in a bench result (``key``: a sibling such as ``{name}_std``); None if absent."""
        holder = (result.get(self.section) or {}) if self.section else result
        return holder.get(key or self.name)

    def fmt(self, value) -> str:
        return "-" if value is None else f"{value * self.scale:.{self.digits}f}{self.suffix}"

    def cell(self, row: dict, flat: bool = False) -> str:
        """A table cell from a bench result (``flat``: from a card record, where every key is top-level)."""
        get = row.get if flat else (lambda key: self.of(row, key))
        text = self.fmt(get(self.name))
        return f"{text} ± {self.fmt(get(self.name + '_std'))}" if self.std else text

    @property
    def better(self) -> str:
        return "higher" if self.higher_is_better else "lower"

    def failed(self, value, threshold) -> bool:
        return value < threshold if self.higher_is_better else value > threshold


def _speed(name, label, index_type, index_name, what):
    return Metric(name, label, "tok/s", True, 1, std=True, model_index=(index_type, index_name), description=what)


METRICS: list[Metric] = [
    Metric(
        "bits_per_weight",
        "bits/weight",
        "bits",
        False,
        short="bpw",
        model_index=("bits_per_weight", "bits per weight (whole file)"),
        description="The whole file's bits per weight.",
    ),
    _speed(
        "prefill_tokens_per_s", "pp tok/s", "prompt_tokens_per_second", "prompt tokens/s", "Prefill speed (pp), mean ± stddev."
    ),
    _speed(
        "decode_tokens_per_s",
        "tg tok/s",
        "generated_tokens_per_second",
        "generated tokens/s",
        "Decode speed (tg), mean ± stddev.",
    ),
    Metric("ttft_ms", "TTFT ms", "ms", False, 1, card=False, description="Time to first token."),
    Metric("peak_rss_mb", "peak RSS MB", "MB", False, 0, card=False, description="Peak RSS during the timed runs."),
    # Gate defaults: each width's worst measured artifact on SmolLM2-135M-Instruct with headroom
    # (small models lose more than large ones), while a zeroed layer or a swapped tokenizer fails widely.
    Metric(
        "kld_mean",
        "KLD mean",
        "nats",
        False,
        4,
        section="quality",
        model_index=("kl_divergence", "mean KL divergence vs base"),
        description="Mean KL divergence from the base's next-token distribution.",
        gate=Gate(
            "kld_mean_max",
            "--max-kld",
            "Gate: highest mean KL divergence (default per bit width).",
            {16: 0.01, 8: 0.04, 6: 0.08, 5: 0.20, 4: 0.40, 3: 0.60, 2: 1.00},
        ),
    ),
    Metric(
        "kld_p99",
        "KLD p99",
        "nats",
        False,
        4,
        section="quality",
        report=False,
        card=False,
        description="99th percentile of the per-token KL divergence.",
        gate=Gate(
            "kld_p99_max",
            "--max-kld-p99",
            "Gate: highest 99th-percentile KL divergence.",
            {16: 0.1, 8: 0.4, 6: 0.6, 5: 1.5, 4: 3.0, 3: 5.0, 2: 8.0},
        ),
    ),
    Metric(
        "top1_agreement",
        "top-1",
        "share",
        True,
        1,
        100,
        "%",
        section="quality",
        model_index=("top1_agreement", "same top token as base"),
        description="Share of positions whose top token matches the base's.",
        gate=Gate(
            "top1_min",
            "--min-top1",
            "Gate: lowest same-top-token share, 0-1.",
            {16: 0.95, 8: 0.90, 6: 0.88, 5: 0.75, 4: 0.60, 3: 0.55, 2: 0.45},
            maximum=1.0,
        ),
    ),
    Metric(
        "ppl_ratio",
        "PPL ratio",
        "ratio",
        False,
        3,
        section="quality",
        model_index=("perplexity_ratio", "perplexity ratio vs base"),
        description="Perplexity over the base's on the same token ids.",
        gate=Gate(
            "ppl_ratio_max",
            "--max-ppl-ratio",
            "Gate: highest perplexity ratio to the base.",
            {16: 1.02, 8: 1.05, 6: 1.08, 5: 1.30, 4: 1.60, 3: 2.0, 2: 3.0},
            minimum=1.0,
        ),
    ),
]


def metric(name: str) -> Metric:
    return next(m for m in METRICS if m.name == name)


def gated() -> list[Metric]:
    """The metrics with a gate, read at call time (a test may declare one more)."""
    return [m for m in METRICS if m.gate is not None]


def metrics_markdown() -> str:
    """docs/bench.md's metric table (``python -m quantkit.core.metrics``; a test checks it is current)."""
    lines = [
        "| key | label | unit | better | gate | meaning |",
        "|---|---|---|---|---|---|",
    ]
    for m in METRICS:
        key = f"`{m.section}.{m.name}`" if m.section else f"`{m.name}`"
        op = "<" if m.higher_is_better else ">"
        gate = f"`{m.gate.option}` (`{m.gate.flag}`): fails {op} {m.gate.default(4)} at 4 bits" if m.gate else ""
        lines.append(f"| {key} | {m.label} | {m.unit} | {m.better} | {gate} | {m.description} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(metrics_markdown(), end="")
