"""The data report (the seed's describe()) and its PNG charts (the seed's hist())."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import krx_clean
from training.data import HALT_HANDLING, CleanResult, fit_calendar, load_prices
from training.data_report import data_report, render_charts, render_report_text

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

MESSY = b"""Date,Open,High,Low,Close,Adj Close,Volume
2020-01-08,12,12,12,12,11.5,300
2020-01-02,10,11,9,10,9.5,100
2020-01-03,null,null,null,null,null,null
2020-01-06,10,11,9,11,10.5,0
2020-01-07,11,12,10,-1,10.5,200
2020-01-06,10,11,9,11,10.5,0
2020-01-20,13,14,12,13,12.5,400
"""


@pytest.fixture(scope="module")
def messy_report() -> dict:
    """Report of a small file with one of each problem."""
    return data_report(load_prices(MESSY))


def test_report_counts_rows_and_reasons(messy_report: dict) -> None:
    assert messy_report["rows_read"] == 7
    assert messy_report["rows_kept"] == 4
    assert messy_report["rows_dropped"] == {
        "missing_values": 1,
        "non_positive_values": 1,
        "duplicate_dates": 1,
        "outliers": 0,
    }
    assert messy_report["rows_dropped_total"] == 3


def test_report_gives_range_columns_flags_and_gap(messy_report: dict) -> None:
    assert messy_report["date_range"] == {"start": "2020-01-02", "end": "2020-01-20", "calendar_days": 19}
    assert messy_report["columns"] == ["open", "high", "low", "close", "adj_close", "volume"]
    assert messy_report["flagged"]["zero_volume"] == {"count": 1, "dates": ["2020-01-06"]}
    assert messy_report["flagged"]["non_positive_values"] == {"count": 1, "dates": ["2020-01-07"]}
    assert messy_report["largest_gap"] == {"days": 12, "from": "2020-01-08", "to": "2020-01-20"}
    assert messy_report["median_gap_days"] == 4.0  # gaps of 4, 2 and 12 days


def test_report_statistics_match_pandas_describe(small_clean: CleanResult) -> None:
    report = data_report(small_clean)
    described = small_clean.frame["close"].describe()
    close = report["statistics"]["close"]
    for key in ("count", "mean", "std", "min", "25%", "50%", "75%", "max"):
        assert close[key] == pytest.approx(described[key]), key
    returns = np.diff(np.log(small_clean.frame["close"].to_numpy()))
    assert report["statistics"]["close_log_return"]["count"] == len(returns) == 599
    assert report["statistics"]["close_log_return"]["mean"] == pytest.approx(returns.mean())


def test_report_lists_outliers_with_the_rule(sample_csv: Path) -> None:
    report = data_report(load_prices(sample_csv))
    # The 1987 crash (-30 % in a day) is far outside MSFT's usual moves.
    assert "1987-10-19" in [outlier["date"] for outlier in report["outliers"]]
    assert set(report["outlier_rule"]) == {"median", "scale", "threshold", "fit_rows"}


def test_report_is_plain_json_and_renders_as_text(messy_report: dict) -> None:
    assert json.loads(json.dumps(messy_report)) == messy_report
    text = render_report_text(messy_report)
    assert "rows read      7" in text
    assert "2020-01-02 to 2020-01-20" in text
    assert "missing_values 1" in text
    assert "zero_volume: 1 (2020-01-06)" in text
    assert "largest gap    12 days (2020-01-08 to 2020-01-20)" in text


def test_charts_are_written_as_png(small_clean: CleanResult, tmp_path: Path) -> None:
    paths = render_charts(small_clean, tmp_path / "charts")
    assert [path.name for path in paths] == ["price_history.png", "histograms.png", "log_returns.png"]
    for path in paths:
        content = path.read_bytes()
        assert content.startswith(PNG_SIGNATURE)
        assert len(content) > 10_000


def test_price_chart_on_a_log_axis(small_clean: CleanResult, tmp_path: Path) -> None:
    # The slice spans 2x, so the automatic choice above drew a linear axis.
    paths = render_charts(small_clean, tmp_path, log_scale=True)
    assert paths[0].read_bytes().startswith(PNG_SIGNATURE)


def test_charts_of_a_close_only_file(tmp_path: Path) -> None:
    rows = "".join(f"2020-01-{day:02d},{100 + day}\n" for day in range(1, 29))
    clean = load_prices(f"Date,Close\n{rows}".encode(), required=("close",))
    assert [path.name for path in render_charts(clean, tmp_path)] == [
        "price_history.png",
        "histograms.png",
        "log_returns.png",
    ]


def test_the_report_says_which_rows_the_calendar_dropped_and_how_halts_are_handled() -> None:
    report = data_report(fit_calendar(krx_clean(halts=(300, 301)), "XKRX"))
    assert report["rows_dropped"]["non_sessions"] == report["calendar_fit"]["non_sessions"]["count"] == 31
    assert report["calendar_fit"]["zero_volume_sessions"]["handling"] == HALT_HANDLING
    text = render_report_text(report)
    assert "calendar       XKRX: 31 zero-volume row(s) on closed days dropped (2021-05-05, 2021-05-19, " in text
    assert f"halts          2 zero-volume session(s) {HALT_HANDLING}" in text
    # Before a calendar is chosen there is nothing to say.
    assert data_report(krx_clean())["calendar_fit"] == {}
