"""A metric is one declaration (quantkit/core/metrics.py): the fake metric of tests/plugins/fake_metric.py,
registered in the table and nowhere else, shows in the terminal table, report.md, the card's table
and model-index, and its gate fails a result past its threshold. docs/bench.md's table is current."""

from dataclasses import replace
from pathlib import Path

import pytest
from plugins.fake_metric import FAKE
from test_report import result

from quantkit.core import metrics


@pytest.fixture
def fake_metric(monkeypatch):
    monkeypatch.setattr(metrics, "METRICS", [*metrics.METRICS, FAKE])
    return FAKE


def measured(tmp_path, gap: float) -> dict:
    data = result(tmp_path / "m.gguf", 100 * 2**20, 60.0, 0.05)
    data["quality"].update(entropy_gap=gap, ppl=10.5, base_ppl=10.0, kld_p99=0.3, rms_dp=0.02)  # the terminal's rows
    return data


def test_fake_metric_shows_in_report_terminal_and_card(fake_metric, tmp_path):
    from quantkit.benchmark.report import table
    from quantkit.cli.bench_cmd import render
    from quantkit.cli.render import console
    from quantkit.core.card_results import eval_results, result_record, results_table

    data = measured(tmp_path, 0.123)
    report = table([data]).splitlines()
    assert "| entropy gap |" in report[0] and "| 0.123 |" in report[2]
    with console.capture() as shown:
        render(data)
    assert "entropy gap" in shown.get() and "0.123 nats" in shown.get()
    record = result_record(data, tmp_path)
    assert record["entropy_gap"] == 0.123
    card = results_table([record]).splitlines()
    assert "| entropy gap |" in card[0] and "| 0.123 |" in card[2]
    index = {e.metric_type: e.metric_value for e in eval_results([record], "base")}
    assert index["entropy_gap"] == 0.123 and index["kl_divergence"] == 0.05


def test_fake_metric_gate_fails_past_its_threshold(fake_metric, tmp_path, monkeypatch):
    from quantkit.benchmark.gates import Gates, check, gates_for
    from quantkit.pipeline.run import check_gates

    assert gates_for(4).entropy_gap_max == 0.5 and gates_for(4, {"entropy_gap_max": 0.9}).entropy_gap_max == 0.9
    assert check(gates_for(4), None, measured(tmp_path, 0.4)["quality"]) == []
    assert check(gates_for(4), None, measured(tmp_path, 0.7)["quality"]) == ["quality: entropy_gap 0.7 > 0.5"]
    data = measured(tmp_path, 0.7)  # a stored result re-gated (quantkit run): failed by the new gate
    assert check_gates(data, Gates()) == ["quality: entropy_gap 0.7 > 0.5"] and data["verdict"] == "failed"
    monkeypatch.setattr(metrics, "METRICS", [*metrics.METRICS[:-1], replace(FAKE, section=None)])  # a top-level one
    assert check(gates_for(4), None, None, {"entropy_gap": 0.7}) == ["bench: entropy_gap 0.7 > 0.5"]


def test_builtin_gates_follow_their_declarations():
    """Gates' fields (flags, recipe keys) and the thresholds are the declared gates, and the
    comparison follows each metric's direction."""
    from dataclasses import fields

    from quantkit.benchmark.gates import Gates, check, gates_for

    assert [f.name for f in fields(Gates)][1:] == [m.gate.option for m in metrics.gated()]
    limits = gates_for(4)
    assert limits.to_dict() == {"kld_mean_max": 0.4, "kld_p99_max": 3.0, "top1_min": 0.6, "ppl_ratio_max": 1.6}
    bad = {"tokenizer_parity": True, "kld_mean": 0.5, "kld_p99": 1.0, "top1_agreement": 0.5, "ppl_ratio": 1.1}
    assert check(limits, None, bad) == ["quality: kld_mean 0.5 > 0.4", "quality: top1_agreement 0.5 < 0.6"]


def test_docs_bench_md_metric_table_is_current():
    doc = (Path(__file__).resolve().parents[1] / "docs" / "bench.md").read_text()
    section = doc.split("<!-- metrics:start -->\n")[1].split("<!-- metrics:end -->")[0]
    assert section == metrics.metrics_markdown(), "run `python -m quantkit.core.metrics` and paste it into docs/bench.md"


def test_docs_gates_md_defaults_are_the_declared_ones():
    doc = (Path(__file__).resolve().parents[1] / "docs" / "gates.md").read_text().splitlines()
    head = next(line for line in doc if line.startswith("| bits |"))
    options = [cell.strip(" `") for cell in head.strip("|").split("|")[1:]]
    assert options == [m.gate.option for m in metrics.gated()]
    table = doc[doc.index(head) + 2 :]
    rows = [[float(c) for c in line.strip("|").split("|")] for line in table[: table.index("")]]
    assert len(rows) == 7
    for bits, *values in rows:
        assert values == [m.gate.defaults[int(bits)] for m in metrics.gated()], f"docs/gates.md's {bits:.0f}-bit row"
