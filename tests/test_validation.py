"""The validation suite: one cheap result in quick mode, its rows, its figure, and the report the CLI writes."""
import json

import numpy as np
import pytest

from meanfield import _validation
from meanfield._validation import Row
from meanfield.cli import main as cli_main

CHEAP = "qkv_angpt"           # the quickest module (a few seconds)


@pytest.fixture(scope="module")
def report(tmp_path_factory, request):
    out = tmp_path_factory.mktemp("validation")
    mp = pytest.MonkeyPatch()
    mp.setattr(_validation, "RESULTS", {CHEAP: _validation.RESULTS[CHEAP]})
    request.addfinalizer(mp.undo)
    code = cli_main(["validate", "--quick", "--output", str(out)])
    return code, out


def test_quick_run_rows_have_the_contract(report):
    code, out = report
    data = json.loads((out / "validation.json").read_text(encoding="utf-8"))
    rows = data["results"][CHEAP]["rows"]
    assert data["quick"] is True and rows
    for r in rows:
        assert set(r) == set(Row._fields)
        assert isinstance(r["quantity"], str) and r["quantity"]
        assert isinstance(r["passed"], bool)
        assert r["error"] >= 0 and r["tolerance"] >= 0
        assert r["passed"] == (r["error"] <= r["tolerance"])
        if not isinstance(r["reference"], str):
            assert np.isfinite(r["reference"]) and np.isfinite(r["ours"])
            diff = abs(r["ours"] - r["reference"])
            assert r["error"] == pytest.approx(diff / abs(r["reference"]) if r["relative"] else diff, rel=1e-12)
    assert code == (0 if all(r["passed"] for r in rows) else 1)
    assert code == 0


def test_quick_run_writes_report_and_figure(report):
    _, out = report
    text = (out / "REPORT.md").read_text(encoding="utf-8")
    assert "| quantity | reference | ours | error | tolerance | pass |" in text
    assert f"## {CHEAP}" in text and f"figures/{CHEAP}.png" in text
    fig = out / "figures" / f"{CHEAP}.png"
    assert fig.is_file() and fig.stat().st_size > 1000


def test_row_helpers():
    from meanfield._validation._common import compare, same, table

    r = compare("x", 2.0, 2.1, 0.06, relative=True)
    assert r.passed and r.error == pytest.approx(0.05)
    assert not compare("x", 0.0, np.nan, 1.0).passed
    s = same("order", "a < b", "b < a")
    assert not s.passed and s.error == 1.0
    assert "FAIL" in table([s], markdown=False) and "**FAIL**" in table([s])


def test_a_failing_module_becomes_a_failing_row(tmp_path):
    rows, _, err = _validation.run_result("no-such-result", True, tmp_path)
    assert err and len(rows) == 1 and not rows[0].passed


def test_script_main_unknown_name():
    with pytest.raises(ValueError, match="unknown validation result"):
        _validation.script_main("no-such-result", [])


def test_the_table_shows_the_digits_a_row_is_checked_to():
    from meanfield._validation._common import compare, fmt, table

    # a 12-digit reference compared at 5e-13 was shown as 0.571327 (7 significant digits)
    exact = compare("E", 0.571327045227, 0.5713270452271, 5e-13)
    rel = compare("γ", 2.0, 2.0 + 6e-9, 1e-9, relative=True)
    loose = compare("slope", 1.3399e-2, 1.33992e-2, 1e-3)
    text = table([exact, rel, loose])
    assert "| 0.571327045227 | 0.5713270452271 |" in text
    assert "| 2 | 2.000000006 |" in text             # a relative 1e-9 of 2: ten digits
    assert "| 0.013399 | 0.0133992 |" in text          # a coarse tolerance keeps the 7 digits
    assert fmt(1.23456789e-8) == "1.235e-08" and fmt(1.23456789e-8, 1e-14) == "1.234568e-08"
    assert fmt(0.0) == "0" and fmt("antipodal", 1e-3) == "antipodal"
