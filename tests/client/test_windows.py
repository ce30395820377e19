"""Windows and rows as the client sends them, from DataFrames, arrays and rows (pure functions, no service)."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest
from stockcast_client.operations import csv_bytes
from stockcast_client.windows import (
    WindowShape,
    dataset_rows,
    last_label_value,
    normalise_column,
    prepare_window,
    windows_of,
)

from training.data import load_prices, normalise_column_name

SHAPE = WindowShape(length=3, features=("open", "high", "low", "close", "volume"), label="close")
DAYS = pd.to_datetime(["2024-01-02", "2024-01-03", "2024-01-04", "2024-01-05"])


def frame(**overrides: list[float]) -> pd.DataFrame:
    """Four days of prices in Yahoo's column names, dates as the index."""
    columns = {
        "Open": [10.0, 11.0, 12.0, 13.0],
        "High": [10.5, 11.5, 12.5, 13.5],
        "Low": [9.5, 10.5, 11.5, 12.5],
        "Close": [10.2, 11.2, 12.2, 13.2],
        "Adj Close": [10.1, 11.1, 12.1, 13.1],
        "Volume": [100, 200, 300, 400],
    }
    columns.update(overrides)
    return pd.DataFrame(columns, index=DAYS)


@pytest.mark.parametrize("header", ["Open", "ADJ CLOSE", "Adj_Close", "adjusted close", " Volume ", "Date", "hi-gh"])
def test_columns_are_matched_as_the_service_matches_an_uploads_header(header: str) -> None:
    assert normalise_column(header) == normalise_column_name(header)


def test_a_frame_gives_its_last_rows_in_feature_order_and_its_last_date() -> None:
    prepared = prepare_window(frame(), SHAPE)

    assert prepared.values == [
        [11.0, 11.5, 10.5, 11.2, 200.0],
        [12.0, 12.5, 11.5, 12.2, 300.0],
        [13.0, 13.5, 12.5, 13.2, 400.0],
    ]
    assert (prepared.last_date, prepared.last_value) == (dt.date(2024, 1, 5), 13.2)


def test_a_date_column_dates_the_window_and_adj_close_can_be_a_feature() -> None:
    dated = frame().reset_index(names="DATE")
    shape = WindowShape(2, ("adj_close", "volume"), "adj_close")

    prepared = prepare_window(dated, shape)

    assert prepared.values == [[12.1, 300.0], [13.1, 400.0]]
    assert (prepared.last_date, prepared.last_value) == (dt.date(2024, 1, 5), 13.1)


def test_rows_keyed_by_column_and_arrays_in_feature_order_give_the_same_window() -> None:
    rows = frame().reset_index(names="Date").to_dict("records")
    array = frame()[["Open", "High", "Low", "Close", "Volume"]].to_numpy()

    from_rows, from_array = prepare_window(rows, SHAPE), prepare_window(array, SHAPE)

    assert from_rows.values == from_array.values == prepare_window(frame(), SHAPE).values
    assert (from_rows.last_date, from_array.last_date) == (dt.date(2024, 1, 5), None)


def test_a_missing_column_names_it_and_the_columns_there_are() -> None:
    with pytest.raises(ValueError) as missing:
        prepare_window(frame().drop(columns=["Volume"]), SHAPE)
    assert str(missing.value) == (
        "window: the frame has no column for ['volume'] (the model's features are"
        " ['open', 'high', 'low', 'close', 'volume']; the frame's columns are"
        " ['Open', 'High', 'Low', 'Close', 'Adj Close'])"
    )


def test_a_value_that_is_not_a_finite_number_names_its_row_date_and_column() -> None:
    with pytest.raises(ValueError, match=r"^window row 1 \(2024-01-04\): low must be a finite number, got nan$"):
        prepare_window(frame(Low=[9.5, 10.5, float("nan"), 12.5]), SHAPE)
    with pytest.raises(ValueError, match=r"^window row 0: close is not a number: 'x'$"):
        prepare_window([[1, 1, 1, "x", 1]] * 3, SHAPE)


def test_a_short_or_misshapen_window_says_what_was_expected() -> None:
    with pytest.raises(ValueError, match=r"^window: the model takes 3 rows, oldest first; got 2$"):
        prepare_window(frame().iloc[:2], SHAPE)
    with pytest.raises(ValueError, match=r"^window row 0: expected 5 values \['open'"):
        prepare_window(np.ones((3, 4)), SHAPE)
    with pytest.raises(ValueError, match=r"^window: expected a 2-D array"):
        prepare_window(np.ones(5), SHAPE)
    with pytest.raises(ValueError, match=r"^windows: expected a 3-D array"):
        windows_of(np.ones((3, 5)))
    assert len(windows_of(np.ones((4, 3, 5)))) == 4


def test_the_last_label_value_is_read_by_name_or_by_the_known_feature_order() -> None:
    assert last_label_value(frame(), "close", None) == 13.2
    assert last_label_value([{"Close": 5.0}], "close", None) == 5.0
    assert last_label_value(np.array([[1.0, 2.0, 3.0, 4.0, 5.0]]), "close", SHAPE.features) == 4.0
    assert last_label_value(np.array([[1.0, 2.0, 3.0, 4.0, 5.0]]), "close", None) is None


def test_rows_to_append_are_json_ready_and_keep_the_uploads_column_names() -> None:
    holiday = frame(Close=[10.2, 11.2, 12.2, float("nan")]).iloc[-2:]

    rows = dataset_rows(holiday)

    assert rows == [
        {
            "Open": 12.0,
            "High": 12.5,
            "Low": 11.5,
            "Close": 12.2,
            "Adj Close": 12.1,
            "Volume": 300,
            "Date": "2024-01-04",
        },
        {
            "Open": 13.0,
            "High": 13.5,
            "Low": 12.5,
            "Close": None,
            "Adj Close": 13.1,
            "Volume": 400,
            "Date": "2024-01-05",
        },
    ]
    assert dataset_rows({"date": dt.date(2024, 1, 8), "close": np.float32(1.5)}) == [
        {"date": "2024-01-08", "close": 1.5}
    ]


def test_a_frame_uploads_as_a_csv_the_service_reads_back_to_the_same_prices() -> None:
    content, name = csv_bytes(frame())

    clean = load_prices(content).frame

    assert name == "frame.csv" and content.startswith(b"Date,Open,High,Low,Close,Adj Close,Volume\n2024-01-02,")
    assert clean["close"].tolist() == [10.2, 11.2, 12.2, 13.2]
    assert clean["date"].dt.date.tolist() == [day.date() for day in DAYS]
