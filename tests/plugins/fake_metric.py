"""A hypothetical metric, declared as a contributor would add one to quantkit/core/metrics.py:
tests/test_metrics.py registers it and checks every place that shows or gates metrics picks it up."""

from quantkit.core.metrics import Gate, Metric

# A quality metric where lower is better, gated at 0.5 at every width (the gate option is new too).
FAKE = Metric(
    "entropy_gap",
    "entropy gap",
    "nats",
    False,
    3,
    section="quality",
    model_index=("entropy_gap", "entropy gap vs base"),
    description="Mean difference of next-token entropy from the base's.",
    gate=Gate("entropy_gap_max", "--max-entropy-gap", "Gate: highest entropy gap.", {2: 0.5}),
)
