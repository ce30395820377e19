"""Appended rows judged without a file: the row rules, the merge's four outcomes, and lines in the file's own form."""

from __future__ import annotations

import pandas as pd
import pytest

from app.datasets.rows import (
    RowConflictError,
    appended_lines,
    check_new_rows,
    csv_rows,
    date_format_of,
    json_rows,
    merge_rows,
    missing_sessions,
)
from tests.helpers import price_csv, price_row, session_rows
from training.data import load_prices
from training.errors import DataError

COLUMNS = ["open", "high", "low", "close", "adj_close", "volume"]


def dataset() -> pd.DataFrame:
    """Five sessions, 2024-12-02 to 2024-12-06, as the clean frame of a stored dataset."""
    return load_prices(price_csv(session_rows("2024-12-02", 5))).frame


def new_rows(*rows: dict[str, object]) -> pd.DataFrame:
    return check_new_rows(json_rows(list(rows)), COLUMNS).frame


def test_later_dates_are_added_and_the_same_values_are_unchanged() -> None:
    merge = merge_rows(
        dataset(), new_rows(price_row("2024-12-06", 104.0), price_row("2024-12-09", 105.0)), replace=False, dataset="d"
    )
    assert merge.added == ["2024-12-09"] and merge.unchanged == ["2024-12-06"]
    assert merge.replaced == [] and merge.corrections == []
    assert merge.rows["date"].dt.strftime("%Y-%m-%d").tolist() == ["2024-12-09"]


def test_other_values_for_a_stored_date_are_a_conflict_naming_date_column_and_values() -> None:
    with pytest.raises(RowConflictError) as raised:
        merge_rows(dataset(), new_rows(price_row("2024-12-04", 110.0)), replace=False, dataset="d")
    assert str(raised.value) == (
        "2024-12-04 is in dataset 'd' with other values (open 101.5 there, 109.5 here; high 103 there, 111 here;"
        " low 101 there, 109 here; close 102 there, 110 here; adj_close 102 there, 110 here): these rows change"
        " history; send replace=true to write them (they are logged). Nothing was appended"
    )
    assert raised.value.status_code == 409


def test_a_date_missing_inside_or_before_the_range_is_a_conflict() -> None:
    frame = dataset().drop(index=2)  # 2024-12-04 was never there
    with pytest.raises(RowConflictError, match=r"2024-12-04 is not in dataset 'd' and lies inside its range"):
        merge_rows(frame, new_rows(price_row("2024-12-04")), replace=False, dataset="d")
    with pytest.raises(RowConflictError, match=r"2024-11-29 is not in dataset 'd' and lies before its first date"):
        merge_rows(frame, new_rows(price_row("2024-11-29")), replace=False, dataset="d")


def test_replace_turns_conflicts_into_corrections() -> None:
    frame = dataset().drop(index=2)
    merge = merge_rows(
        frame, new_rows(price_row("2024-12-04", 90.0), price_row("2024-12-05", 90.0)), replace=True, dataset="d"
    )
    assert merge.added == ["2024-12-04"] and merge.replaced == ["2024-12-05"]
    filled, replaced = merge.corrections
    assert filled.date == "2024-12-04" and filled.old is None and filled.new["close"] == 90.0
    assert replaced.old is not None and replaced.old["close"] == 103.0 and replaced.new["close"] == 90.0


def test_a_value_within_the_tolerance_is_the_same() -> None:
    row = price_row("2024-12-06", 104.0 * (1 + 1e-12))
    assert merge_rows(dataset(), new_rows(row), replace=False, dataset="d").unchanged == ["2024-12-06"]


def test_null_rows_are_skipped_and_zero_volume_flagged_as_an_upload_does() -> None:
    holiday = dict.fromkeys(price_row("x"), None) | {"Date": "2024-12-25"}
    checked = check_new_rows(json_rows([price_row("2024-12-24"), holiday, price_row("2024-12-26", volume=0)]), COLUMNS)
    assert [(item.index, item.date, item.reason) for item in checked.skipped] == [(1, "2024-12-25", "missing_values")]
    assert checked.zero_volume == ["2024-12-26"]
    assert checked.frame.index.tolist() == [0, 2]


def test_a_non_positive_price_refuses_the_request_naming_the_row() -> None:
    with pytest.raises(DataError, match=r"^row 1 \(2024-12-10\): a price is not positive .*\(open -0.5, high 1,"):
        check_new_rows(json_rows([price_row("2024-12-09"), price_row("2024-12-10", 0.0)]), COLUMNS)


def test_junk_names_the_row_by_position_and_date() -> None:
    rows = [price_row("2024-12-09"), price_row("2024-12-10") | {"Close": "n.a."}]
    with pytest.raises(DataError, match=r"column 'close' has values that are not numbers on row\(s\) 1 \(2024-12-10\)"):
        check_new_rows(json_rows(rows), COLUMNS)


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([], "no rows: send at least one row"),
        (
            [price_row("2024-12-09"), {"Date": "2024-12-10", "Close": 1.0}],
            r"row 1 \(2024-12-10\) has no \['Open', 'High', 'Low', 'Adj Close', 'Volume'\]",
        ),
        ([{key: value for key, value in price_row("2024-12-09").items() if key != "Adj Close"}], r"\['adj_close'\]"),
        ([price_row("2024-12-09"), price_row("2024-12-09")], r"rows \[0, 1\] are all dated 2024-12-09"),
    ],
    ids=["empty", "ragged", "missing-column", "same-date-twice"],
)
def test_malformed_requests_are_refused(rows: list[dict[str, object]], message: str) -> None:
    with pytest.raises(DataError, match=message):
        check_new_rows(json_rows(rows), COLUMNS)


def test_a_csv_body_takes_the_upload_s_column_variants() -> None:
    body = b"date,OPEN,high,Low,close,adj_close,volume,Dividends\n2024-12-09,1,2,0.5,1.5,1.5,10,0\n"
    checked = check_new_rows(csv_rows(body), COLUMNS)
    assert checked.frame["close"].tolist() == [1.5] and checked.ignored_columns == ["Dividends"]


def test_lines_follow_the_stored_header_and_leave_unknown_columns_empty() -> None:
    rows = new_rows(price_row("2024-12-09", 105.25, volume=1234))
    header = ["Date", "Volume", "Close", "OpenInt", "Open", "High", "Low", "Adj Close"]
    line = appended_lines(header, rows, newline="\r\n", date_format="%m/%d/%Y")
    assert line == b"12/09/2024,1234,105.25,,104.75,106.25,104.25,105.25\r\n"


@pytest.mark.parametrize(
    ("texts", "expected"),
    [
        (["2024-12-05", "2024-12-06"], "%Y-%m-%d"),
        (["12/05/2024", "12/06/2024"], "%m/%d/%Y"),
        (["05.12.2024", "06.12.2024"], "%d.%m.%Y"),
        (["2024-12-05 00:00:00-05:00", "2024-12-06 00:00:00-05:00"], "%Y-%m-%d"),
    ],
)
def test_the_stored_date_format_is_followed(texts: list[str], expected: str) -> None:
    dates = [pd.Timestamp("2024-12-05"), pd.Timestamp("2024-12-06")]
    assert date_format_of(texts, dates) == expected


def test_missing_sessions_are_the_calendar_s_sessions_without_a_row() -> None:
    dates = pd.Series(pd.to_datetime(["2024-12-20", "2024-12-24", "2024-12-30"]))
    gap = missing_sessions(dates, pd.Timestamp("2024-12-20"), pd.Timestamp("2024-12-30"), "XNYS")
    assert gap == ["2024-12-23", "2024-12-26", "2024-12-27"]
    assert missing_sessions(dates, pd.Timestamp("2024-12-20"), pd.Timestamp("2024-12-30"), "24/7") == [
        "2024-12-21",
        "2024-12-22",
        "2024-12-23",
        "2024-12-25",
        "2024-12-26",
        "2024-12-27",
        "2024-12-28",
        "2024-12-29",
    ]
