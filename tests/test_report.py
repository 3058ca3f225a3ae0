"""Reports from bench results: Markdown with the table and transcripts, two PNG plots, merged JSON,
and the artifact's model card results section filled in (no model needed: results are built
from BenchResult itself so the keys are the real ones)."""

import json

import pytest

from quantkit.benchmark.bench import BenchResult, Stat
from quantkit.benchmark.report import load_results, write_report
from quantkit.core.card import RESULTS_BEGIN, write_model_card
from quantkit.core.errors import InputError


def result(artifact, size, tps, kld, passed=True) -> dict:
    return BenchResult(
        artifact=str(artifact),
        engine="llama.cpp",
        method="gguf",
        bits=4,
        size_bytes=size,
        weights_bytes=size,
        bits_per_weight=4.8,
        n_params=135_000_000,
        prompt_tokens=512,
        gen_tokens=128,
        repetitions=5,
        load_s=0.5,
        load_peak_rss_mb=300.0,
        peak_rss_mb=320.0,
        prefill=Stat(400.0, 5.0),
        decode=Stat(tps, 1.0),
        ttft=Stat(1280.0, 10.0),
        decode_latency_ms={"p50": 10.0, "p90": 12.0, "p99": 15.0},
        bandwidth={"weights_bytes_per_token": size, "achieved_gbps": 1.0, "copy_gbps": 8.0, "fraction": 0.125},
        cuda={},
        environment={"cpu": "test CPU", "device": "cpu", "threads": 2},
        smoke={"passed": passed, "failures": [], "transcript": "[user] 你好\n[assistant] Hello!"},
        quality={"kld_mean": kld, "top1_agreement": 0.9, "ppl_ratio": 1.05, "tokenizer_parity": True},
        failures=[] if passed else ["smoke: turn 1: empty reply"],
    ).to_dict()


@pytest.fixture
def artifact(tmp_path):
    folder = tmp_path / "smollm2-gguf"
    folder.mkdir()
    write_model_card(folder, {"method": "gguf", "source": {"repo_id": "HuggingFaceTB/SmolLM2-135M-Instruct"}}, "use it")
    return folder


def test_write_report_markdown_plots_and_card(artifact, tmp_path):
    results = [result(artifact, 100 * 2**20, 60.0, 0.05), result(tmp_path / "q2.gguf", 60 * 2**20, 80.0, 0.4, passed=False)]
    report = write_report(results, tmp_path / "out")
    text = report.read_text()
    assert report.name == "report.md" and "| smollm2-gguf |" in text and "60.0 ± 1.0" in text
    assert "**failed**" in text and "smoke: turn 1: empty reply" in text and "你好" in text
    for png in ("size_vs_decode.png", "size_vs_kld.png"):
        data = (report.parent / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
        assert f"]({png})" in text
    assert len(json.loads((report.parent / "results.json").read_text())) == 2
    card = (artifact / "README.md").read_text()
    assert RESULTS_BEGIN in card and "Not benchmarked yet" not in card and "60.0 ± 1.0" in card


def test_report_shows_three_verdicts(artifact, tmp_path):
    """passed, failed and unvalidated (benched with no base: quality never compared) side by side."""
    unchecked = result(tmp_path / "nobase.gguf", 50 * 2**20, 90.0, None) | {"quality": None}
    unchecked.pop("verdict"), unchecked.pop("unvalidated")  # as an older bench wrote it: passed, no verdict
    results = [result(artifact, 100 * 2**20, 60.0, 0.05), result(tmp_path / "q2.gguf", 60 * 2**20, 80.0, 0.4, passed=False)]
    text = write_report([*results, unchecked], tmp_path / "out").read_text()
    verdicts = {line.split("|")[1].strip(): line.split("|")[-2].strip() for line in text.splitlines() if line.startswith("| ")}
    assert verdicts == {"artifact": "verdict", "smollm2-gguf": "passed", "q2.gguf": "**failed**", "nobase.gguf": "*unvalidated*"}
    assert "Unvalidated: no base model: quality not compared" in text


def test_report_cli_from_folder_of_json(artifact, tmp_path):
    from click.testing import CliRunner

    from quantkit.cli import cli

    runs = tmp_path / "runs"
    runs.mkdir()
    (runs / "a.json").write_text(json.dumps(result(artifact, 2**20, 50.0, 0.01)))
    (runs / "other.json").write_text('{"kind": "something else"}')
    out = tmp_path / "rep"
    res = CliRunner().invoke(cli, ["report", str(runs), "-o", str(out), "--no-cards"])
    assert res.exit_code == 0, res.output
    assert res.output.strip().endswith("report.md") and (out / "report.md").is_file()
    assert "Not benchmarked yet" in (artifact / "README.md").read_text()  # --no-cards


def test_no_results_is_an_error(tmp_path):
    (tmp_path / "x.json").write_text("{}")
    with pytest.raises(InputError, match="no bench results"):
        load_results([tmp_path])


def test_multi_gguf_folder_card_gets_a_row_per_file(artifact, tmp_path):
    (artifact / "quantkit.json").write_text('{"method": "gguf"}')
    results = [result(artifact / f"m-{t}.gguf", 2**20 * s, 50.0, 0.01) for t, s in (("Q8_0", 140), ("Q4_K_M", 100))]
    write_report(results, tmp_path / "out")
    card = (artifact / "README.md").read_text()
    assert "| m-Q8_0.gguf |" in card and "| m-Q4_K_M.gguf |" in card


def test_smoke_transcripts_side_by_side_with_the_base(tmp_path):
    """The artifact's and the base's replies per turn in one table, control tokens visible."""
    from quantkit.benchmark.smoke import SmokeResult, SmokeTurn, against_base

    def smoke(mode, *replies, problems=()):
        turns = [
            SmokeTurn(user=f"question {i}|?", reply=r, tokens=3, stopped=True, repeat_ratio=0.0, finite=True)
            for i, r in enumerate(replies)
        ]
        for i, (code, text) in problems:
            turns[i].defects.append(code)
            turns[i].problems.append(text)
        return SmokeResult(passed=True, turns=turns, failures=[], seconds=1.0, mode=mode)

    base = smoke("chat", "Paris.", "base rambles", problems=[(1, ("no_stop", "did not stop within 256 tokens"))])
    art = against_base(
        smoke(
            "chat",
            "Paris <|im_start|>user",
            "it rambles too",
            problems=[
                (0, ("leak", "template/special tokens leaked: <|im_start|>")),
                (1, ("repetition", "degenerate repetition (80% repeated 4-grams)")),
            ],
        ),
        base.to_dict(),
    )
    data = result(tmp_path / "a.gguf", 2**20, 50.0, 0.01)
    data["smoke"], data["failures"], data["passed"] = art.to_dict(), [f"smoke: {f}" for f in art.failures], False
    completion = result(tmp_path / "b.gguf", 2**20, 50.0, 0.01)
    completion["smoke"] = smoke("completion", "Berlin.").to_dict()
    text = write_report([data, completion], tmp_path / "out", fill_cards=False).read_text()
    assert "| # | user | artifact | base |" in text
    assert "| 1 | question 0&#124;? | Paris &lt;&#124;im_start&#124;&gt;user<br>**template/special tokens leaked" in text
    assert "| Paris. |" in text and "base rambles<br>**did not stop within 256 tokens**" in text
    assert "Shown by the base too (not counted):\n- turn 2: degenerate repetition" in text
    assert "smoke: turn 1: template/special tokens leaked" in text
    assert "Completion smoke (no chat template) transcript (no base to compare with):" in text
    assert "[prompt] question 0|?\n[completion] Berlin." in text and "| pass (completion) |" in text
