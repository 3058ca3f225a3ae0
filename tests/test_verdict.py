"""Three verdicts, not two (issue 23 item 2): passed, failed, unvalidated; read the same from a
fresh bench result, a result written before verdicts existed and a card's record of one."""

import pytest

from quantkit.core.verdict import overall, reasons_of, unvalidated_reasons, verdict_of

SMOKE = {"passed": True, "failures": []}
QUALITY = {"kld_mean": 0.01, "top1_agreement": 0.97}


@pytest.mark.parametrize(
    "base, smoke, quality, gates, reasons",
    [
        ("/m/base", SMOKE, QUALITY, {"smoke": True}, []),
        (None, SMOKE, None, {}, ["no base model: quality not compared"]),
        ("/m/base", SMOKE, None, {}, ["quality skipped"]),
        ("/m/base", None, QUALITY, {}, ["smoke chat skipped"]),
        ("/m/base", SMOKE, QUALITY, {"smoke": False}, ["smoke chat not gated"]),
        (None, None, None, {}, ["no base model: quality not compared", "smoke chat skipped"]),
    ],
)
def test_unvalidated_reasons(base, smoke, quality, gates, reasons):
    assert unvalidated_reasons(base, smoke, quality, gates) == reasons
    result = {"base": base, "smoke": smoke, "quality": quality, "gates": gates, "failures": [], "passed": True}
    assert verdict_of(result) == ("unvalidated" if reasons else "passed")
    assert reasons_of(result) == reasons


def test_failures_win_and_stored_verdicts_are_read_as_written():
    assert verdict_of({"failures": ["smoke: empty reply"], "verdict": "unvalidated"}) == "failed"
    assert verdict_of({"verdict": "unvalidated", "passed": False, "unvalidated": ["quality skipped"]}) == "unvalidated"
    assert reasons_of({"verdict": "unvalidated", "unvalidated": ["quality skipped"]}) == ["quality skipped"]
    assert verdict_of({"passed": False, "smoke": SMOKE, "quality": QUALITY, "base": "b"}) == "failed"


def test_a_cards_record_without_a_verdict_is_judged_from_its_numbers():
    """quantkit-results.json written before verdicts: flat kld_mean and "pass"/"fail" smoke."""
    assert verdict_of({"passed": True, "failures": [], "smoke": "pass", "kld_mean": 0.01}) == "passed"
    assert verdict_of({"passed": True, "failures": [], "smoke": "pass", "kld_mean": None}) == "unvalidated"


def test_one_verdict_per_artifact():
    passed = {"verdict": "passed"}
    unvalidated = {"verdict": "unvalidated"}
    assert overall([passed, unvalidated]) == "unvalidated"
    assert overall([passed, {"failures": ["x"]}, unvalidated]) == "failed"
    assert overall([passed]) == "passed" and overall([]) is None and overall(None) is None
