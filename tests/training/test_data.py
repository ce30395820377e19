"""Reading and cleaning price CSVs: what is accepted, removed, flagged or refused, and why."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tests.helpers import krx_clean, tiny_clean, walk_clean
from training.calendars import is_session
from training.data import (
    HALT_HANDLING,
    CleaningSettings,
    RowNames,
    check_rows,
    clean_prices,
    fit_calendar,
    load_prices,
    normalise_column_name,
    read_price_csv,
)
from training.errors import DataError
from training.features import make_windows
from training.spec import WindowSpec

HEADER = "Date,Open,High,Low,Close,Adj Close,Volume\n"


def csv(*rows: str, header: str = HEADER) -> bytes:
    """A small CSV file as bytes."""
    return (header + "".join(f"{row}\n" for row in rows)).encode()


def random_walk_csv(rows: int, seed: int = 0, start: float = 100.0) -> bytes:
    """A calm geometric random walk with plausible OHLCV rows, oldest first."""
    rng = np.random.default_rng(seed)
    close = start * np.exp(np.cumsum(rng.normal(0, 0.01, rows)))
    dates = pd.bdate_range("2020-01-01", periods=rows)
    lines = [
        f"{day:%Y-%m-%d},{price:.4f},{price * 1.01:.4f},{price * 0.99:.4f},{price:.4f},{price:.4f},{1000 + index}"
        for index, (day, price) in enumerate(zip(dates, close, strict=True))
    ]
    return csv(*lines)


def test_yahoo_null_rows_are_dropped_and_counted() -> None:
    result = load_prices(
        csv(
            "2020-01-02,10,11,9,10.5,10.4,100",
            "2020-01-03,null,null,null,null,null,null",
            "2020-01-06,10.5,11,10,10.8,10.7,120",
            "2020-01-07,,,,,,",
        )
    )
    assert result.rows_read == 4
    assert result.dropped["missing_values"] == 2
    assert result.frame["date"].dt.strftime("%Y-%m-%d").tolist() == ["2020-01-02", "2020-01-06"]
    assert result.frame["close"].tolist() == [10.5, 10.8]


@pytest.mark.parametrize(
    "header", ["Adj Close", "adj close", " ADJ  CLOSE ", "Adj_Close", "AdjClose", "Adjusted Close"]
)
def test_adj_close_header_matches_ignoring_case_and_spaces(header: str) -> None:
    result = load_prices(
        csv("2020-01-02,10,11,9,10.5,10.25,100", header=f"date, OPEN ,High,low,CLOSE,{header},Volume\n")
    )
    assert list(result.frame.columns) == ["date", "open", "high", "low", "close", "adj_close", "volume"]
    assert result.frame["adj_close"].iloc[0] == 10.25


def test_normalise_column_name() -> None:
    assert normalise_column_name(" Adj  Close ") == "adj_close"
    assert normalise_column_name("VOLUME") == "volume"


def test_unsorted_dates_are_sorted_oldest_first() -> None:
    result = load_prices(
        csv("2020-01-06,3,3,3,3,3,3", "2020-01-02,1,1,1,1,1,1", "2020-01-03,2,2,2,2,2,2"),
    )
    assert result.frame["close"].tolist() == [1, 2, 3]
    assert result.frame["date"].is_monotonic_increasing


def test_duplicate_dates_keep_the_last_row_and_are_counted() -> None:
    result = load_prices(
        csv("2020-01-02,1,1,1,1,1,1", "2020-01-03,2,2,2,2,2,2", "2020-01-02,5,5,5,5,5,5"),
    )
    assert result.dropped["duplicate_dates"] == 1
    assert result.frame["close"].tolist() == [5, 2]


def test_missing_column_is_named() -> None:
    with pytest.raises(DataError, match=r"missing column\(s\) \['volume'\]"):
        load_prices(csv("2020-01-02,1,1,1,1", header="Date,Open,High,Low,Close\n"))


def test_an_unknown_required_column_is_refused(sample_csv) -> None:
    # The sample has an OpenInt column, but the cleaner does not know what it means.
    with pytest.raises(DataError, match=r"column\(s\) \['openint'\] cannot be used"):
        load_prices(sample_csv, required=("close", "openint"))


def test_missing_column_is_fine_when_not_required() -> None:
    result = load_prices(csv("2020-01-02,1", header="Date,Close\n"), required=("close",))
    assert list(result.frame.columns) == ["date", "close"]


def test_non_numeric_cells_name_the_csv_lines() -> None:
    data = csv(
        "2020-01-02,1,1,1,1,1,1",
        "2020-01-03,oops,1,1,1,1,1",
        "2020-01-06,1,1,1,1,1,1",
        "2020-01-07,#N/A,1,1,1,1,1",
    )
    with pytest.raises(
        DataError, match=r"column 'open' .* not numbers on CSV line\(s\) 3, 5 \(e\.g\. 'oops', '#N/A'\)"
    ):
        load_prices(data)


def test_infinite_price_is_refused() -> None:
    with pytest.raises(DataError, match=r"column 'close' .* CSV line\(s\) 2"):
        load_prices(csv("2020-01-02,1,1,1,inf,1,1"))


def test_bad_date_names_the_line() -> None:
    with pytest.raises(DataError, match=r"column 'date' .* not dates on CSV line\(s\) 3 \(e\.g\. 'yesterday'\)"):
        load_prices(csv("2020-01-02,1,1,1,1,1,1", "yesterday,1,1,1,1,1,1"))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "not a readable CSV file"),
        (HEADER.encode(), "the file has a header but no data rows"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x01\x00\xff\xfe" * 20, "not a readable CSV file"),
        (bytes(range(256)) * 4, "not a readable CSV file"),
        (b"hello world\nthis is not a table\n", "not a price table"),
        (b"Date;Open;High;Low;Close;Volume\n2020-01-02;1;1;1;1;1\n", "not a price table"),
        (b"Date,Open,High,Low,Close,Volume\n2020-01-02,1,1,1,1,1,7,8\n", "more fields than the header"),
    ],
    ids=["empty", "header-only", "png-bytes", "binary", "prose", "semicolons", "extra-fields"],
)
def test_unusable_files_are_refused_with_the_reason(content: bytes, message: str) -> None:
    with pytest.raises(DataError, match=message):
        load_prices(content)


def test_missing_file_is_a_data_error(tmp_path) -> None:
    with pytest.raises(DataError, match="file not found"):
        read_price_csv(tmp_path / "absent.csv")


def test_krw_prices_in_tens_of_thousands_with_thousands_separators() -> None:
    result = load_prices(
        csv(
            '2023-01-02,"55,500","56,100","55,200","55,500","53,990.5","10,031,448"',
            "2023-01-03,55400,56000,54500,55400,53893.2,13547030",
        )
    )
    assert result.frame["close"].tolist() == [55500, 55400]
    assert result.frame["volume"].tolist() == [10031448, 13547030]


def test_prices_in_cents_load_as_given() -> None:
    result = load_prices(csv("2020-01-02,8414,8461,8383,8456,8456,18029584"))
    assert result.frame["close"].iloc[0] == 8456


def test_daylight_saving_offsets_keep_the_local_trading_day() -> None:
    # yfinance's to_csv() writes midnight in exchange time with an offset that
    # changes with daylight saving; the date must stay the local one.
    result = load_prices(
        csv(
            "2023-03-10 00:00:00-05:00,1,1,1,1,1,1",
            "2023-03-13 00:00:00-04:00,2,2,2,2,2,2",
            "2023-03-14 00:00:00+09:00,3,3,3,3,3,3",
        )
    )
    assert result.frame["date"].dt.strftime("%Y-%m-%d").tolist() == ["2023-03-10", "2023-03-13", "2023-03-14"]


def test_zero_volume_days_are_flagged_not_dropped() -> None:
    result = load_prices(csv("2020-01-02,1,1,1,1,1,100", "2020-01-03,1,1,1,1,1,0", "2020-01-06,1,1,1,1,1,5"))
    assert result.flagged["zero_volume"] == ["2020-01-03"]
    assert len(result.frame) == 3


def test_non_positive_prices_are_dropped_and_flagged() -> None:
    result = load_prices(csv("2020-01-02,1,1,1,1,1,100", "2020-01-03,1,1,0,1,1,100", "2020-01-06,1,1,1,-2,1,5"))
    assert result.dropped["non_positive_values"] == 2
    assert result.flagged["non_positive_values"] == ["2020-01-03", "2020-01-06"]
    assert result.frame["date"].dt.strftime("%Y-%m-%d").tolist() == ["2020-01-02"]


def test_check_rows_keeps_the_raw_order_and_says_why_each_row_would_be_dropped() -> None:
    raw = read_price_csv(csv("2020-01-06,1,1,1,1,1,1", "2020-01-02,null,1,1,1,1,1", "2020-01-03,1,1,0,1,1,1"))
    checked = check_rows(raw)
    assert checked.frame["date"].dt.strftime("%Y-%m-%d").tolist() == ["2020-01-06", "2020-01-02", "2020-01-03"]
    assert checked.dropped.tolist() == ["", "missing_values", "non_positive_values"]


def test_check_rows_names_rows_as_the_caller_does() -> None:
    raw = read_price_csv(csv("2020-01-02,1,1,1,1,1,1", "2020-01-03,1,x,1,1,1,1"))
    names = RowNames("row(s)", lambda index: f"{index} (2020-01-0{index + 2})")
    with pytest.raises(DataError, match=r"column 'high' has values that are not numbers on row\(s\) 1 \(2020-01-03\)"):
        check_rows(raw, row_names=names)


def test_outlier_is_reported_and_kept_by_default() -> None:
    raw = read_price_csv(random_walk_csv(200))
    raw.loc[150, ["Open", "High", "Low", "Close"]] = "1000000"
    result = clean_prices(raw)
    dates = [outlier["date"] for outlier in result.outliers]
    spike_day = pd.Timestamp(raw.loc[150, "Date"]).strftime("%Y-%m-%d")
    assert spike_day in dates
    assert len(result.frame) == 200
    assert result.dropped["outliers"] == 0


def test_outliers_are_masked_not_deleted_and_their_windows_are_left_out() -> None:
    raw = read_price_csv(random_walk_csv(200))
    raw.loc[150, ["Open", "High", "Low", "Close"]] = "1000000"
    result = clean_prices(raw, settings=CleaningSettings(mask_outliers=True))
    assert result.dropped["outliers"] == 0 and len(result.frame) == 200
    flagged = result.frame.index[result.frame["outlier"]].tolist()
    # The spike day and the day it falls back are both one-day outlier returns.
    assert flagged == [150, 151]
    spec = WindowSpec(features=("close",), label="close", window=10, horizon=2)
    values = result.frame[["close"]].to_numpy()
    inputs, futures = make_windows(values, spec, result.frame["outlier"].to_numpy())
    all_inputs, _ = make_windows(values, spec)
    # A window spans 12 rows (inputs and targets): those starting at rows 139..151 touch one, 13 of 189.
    assert len(all_inputs) == 189 and len(inputs) == 189 - 13
    assert values[140:152].max() not in inputs and futures.max() < 1000


def test_outlier_rule_is_fitted_on_the_oldest_rows_only() -> None:
    raw = read_price_csv(random_walk_csv(300))
    before = clean_prices(raw).outlier_rule
    fit_rows = int(before["fit_rows"])
    changed = raw.copy()
    for column in ("Open", "High", "Low", "Close", "Adj Close"):
        later = changed[column].astype(float).iloc[fit_rows:]
        noise = np.random.default_rng(1).uniform(0.5, 3.0, len(later))
        changed.loc[changed.index[fit_rows:], column] = (later * noise).astype(str)
    after = clean_prices(changed).outlier_rule
    assert after == before
    # The rule does react to the fitted rows, so the assertion above can fail.
    changed.loc[changed.index[1 : fit_rows - 1 : 2], "Close"] = "150"
    assert clean_prices(changed).outlier_rule != before


def test_zero_volume_rows_on_closed_days_are_dropped_and_halts_kept() -> None:
    clean = krx_clean(halts=(300, 301))
    fitted = fit_calendar(clean, "XKRX")

    dropped = fitted.calendar_fit["non_sessions"]
    assert dropped["count"] == fitted.dropped["non_sessions"] == len(clean.frame) - len(fitted.frame) > 0
    # Seollal 2022 and Korea's local election day: zero-volume rows the XKRX calendar skips.
    assert {"2022-01-31", "2022-02-01", "2022-02-02", "2022-06-01"} <= set(dropped["dates"])
    days = fitted.frame["date"].to_numpy().astype("datetime64[D]")
    assert is_session(days, "XKRX").all()
    assert fitted.calendar_fit["zero_volume_sessions"]["dates"] == ["2022-06-20", "2022-06-21"]
    assert fitted.calendar_fit["zero_volume_sessions"]["handling"] == HALT_HANDLING
    assert fit_calendar(fitted, "XKRX") is fitted


def test_weekend_rows_on_an_exchange_calendar_are_refused_naming_them() -> None:
    clean = walk_clean(list(pd.date_range("2024-01-01", periods=60)))
    with pytest.raises(DataError) as refused:
        fit_calendar(clean, "XNYS")
    assert str(refused.value) == (
        "the data trades on weekends (2024-01-06, 2024-01-07, 2024-01-13, 2024-01-14, 2024-01-20 and 11 more), "
        "so it follows a '24/7' calendar, not XNYS: train with calendar '24/7'"
    )


def test_traded_rows_on_closed_weekdays_are_refused_naming_them() -> None:
    # A US stock on Korea's calendar: it trades through Seollal.
    clean = walk_clean(list(pd.bdate_range("2022-01-24", periods=10)))
    with pytest.raises(DataError) as refused:
        fit_calendar(clean, "XKRX")
    assert str(refused.value) == (
        "the data trades on days the XKRX calendar is closed (2022-01-31, 2022-02-01, 2022-02-02): "
        "train with the calendar of the exchange the prices come from"
    )


def test_a_24_7_calendar_refuses_data_without_weekend_rows() -> None:
    clean = walk_clean(list(pd.bdate_range("2024-01-01", periods=30)))
    with pytest.raises(DataError) as refused:
        fit_calendar(clean, "24/7")
    assert str(refused.value) == (
        "calendar '24/7' forecasts every day, but the data has no row on a Saturday or Sunday in 39 days "
        "(2024-01-01 to 2024-02-09): it follows an exchange's calendar; train with that one "
        "(XNYS by default, XKRX, XLON, ...)"
    )
    every_day = fit_calendar(walk_clean(list(pd.date_range("2024-01-01", periods=30))), "24/7")
    assert len(every_day.frame) == 30 and every_day.calendar_fit["inferred"] == "24/7"


def test_the_sample_fits_the_default_calendar_whole() -> None:
    clean = tiny_clean()
    fitted = fit_calendar(clean, "XNYS")
    assert len(fitted.frame) == len(clean.frame)
    assert fitted.calendar_fit["non_sessions"]["count"] == 0
