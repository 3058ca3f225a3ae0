"""What one bench run measured: pp/tg as mean +- stddev (llama-bench's way), latency
percentiles (optimum-benchmark's), and everything else as one flat record for JSON and reports."""

import statistics
from dataclasses import asdict, dataclass, field

from quantkit.core.verdict import unvalidated_reasons


@dataclass
class Stat:
    mean: float
    std: float

    @classmethod
    def of(cls, values: list[float], digits: int = 2) -> "Stat":
        std = statistics.stdev(values) if len(values) > 1 else 0.0
        return cls(round(statistics.fmean(values), digits), round(std, digits))


@dataclass
class BenchResult:
    artifact: str
    engine: str
    method: str | None
    bits: int
    size_bytes: int
    weights_bytes: int
    bits_per_weight: float | None
    n_params: int | None
    prompt_tokens: int
    gen_tokens: int
    repetitions: int
    load_s: float
    load_peak_rss_mb: float
    peak_rss_mb: float  # during the timed prefill/decode runs
    prefill: Stat  # tokens/s
    decode: Stat  # tokens/s
    ttft: Stat  # ms
    decode_latency_ms: dict  # p50/p90/p99 of one decode step
    bandwidth: dict
    cuda: dict
    environment: dict
    base: str | None = None
    smoke: dict | None = None
    quality: dict | None = None
    gates: dict = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    dequantized: bool = False  # ran as dense matmuls (compressed-tensors in transformers)
    runtime_bytes: int | None = None  # weight bytes held where it ran (dense when dequantized)
    speed_tool: dict | None = None  # pp/tg's source when a tool measured them (llama-bench: command, mean, std)

    @property
    def unvalidated(self) -> list[str]:
        """Why it is not validated though no gate failed: no base, quality or smoke skipped."""
        return unvalidated_reasons(self.base, self.smoke, self.quality, self.gates)

    @property
    def verdict(self) -> str:
        """passed | failed | unvalidated (quantkit.core.verdict)."""
        return "failed" if self.failures else ("unvalidated" if self.unvalidated else "passed")

    @property
    def passed(self) -> bool:
        """True only for "passed": a reader that knows only this key never takes unvalidated for passed."""
        return self.verdict == "passed"

    def to_dict(self) -> dict:
        """The documented JSON (docs/bench.md): flat headline numbers, nested details."""
        data = asdict(self)
        for key, unit in (("prefill", "prefill_tokens_per_s"), ("decode", "decode_tokens_per_s"), ("ttft", "ttft_ms")):
            stat = data.pop(key)
            data[unit], data[f"{unit}_std"] = stat["mean"], stat["std"]
        data["passed"], data["verdict"], data["unvalidated"] = self.passed, self.verdict, self.unvalidated
        return {"schema": 1, "kind": "bench", **data}


def percentiles_ms(steps: list[float]) -> dict:
    import numpy as np

    values = np.asarray(steps) * 1e3
    return {f"p{q}": round(float(np.percentile(values, q)), 3) for q in (50, 90, 99)}
