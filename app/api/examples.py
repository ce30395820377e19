"""Working OpenAPI examples: the bundled sample's last 40 trading days (MSFT, 2017), and a monitoring answer.

The sample model `msft` takes windows of 40 rows, so `/docs` "Try it out"
answers with a real forecast on a fresh start. The monitoring answer is
documentation only (a test checks it fits the response model).
See docs/design.md.
"""

from __future__ import annotations

from typing import Any

SAMPLE_WINDOW: list[dict[str, Any]] = [
    {"date": "2017-09-18", "open": 75.23, "high": 75.97, "low": 75.04, "close": 75.16, "volume": 23305749.0},
    {"date": "2017-09-19", "open": 75.21, "high": 75.71, "low": 75.01, "close": 75.44, "volume": 15769512.0},
    {"date": "2017-09-20", "open": 75.35, "high": 75.55, "low": 74.31, "close": 74.94, "volume": 20790318.0},
    {"date": "2017-09-21", "open": 75.11, "high": 75.24, "low": 74.11, "close": 74.21, "volume": 19174097.0},
    {"date": "2017-09-22", "open": 73.99, "high": 74.51, "low": 73.85, "close": 74.41, "volume": 14095457.0},
    {"date": "2017-09-25", "open": 74.09, "high": 74.25, "low": 72.92, "close": 73.26, "volume": 24139290.0},
    {"date": "2017-09-26", "open": 73.67, "high": 73.81, "low": 72.99, "close": 73.26, "volume": 18014578.0},
    {"date": "2017-09-27", "open": 73.55, "high": 74.17, "low": 73.17, "close": 73.85, "volume": 19488004.0},
    {"date": "2017-09-28", "open": 73.54, "high": 73.97, "low": 73.31, "close": 73.87, "volume": 10879680.0},
    {"date": "2017-09-29", "open": 73.94, "high": 74.535, "low": 73.88, "close": 74.49, "volume": 17075298.0},
    {"date": "2017-10-02", "open": 74.71, "high": 75.01, "low": 74.295, "close": 74.61, "volume": 15296790.0},
    {"date": "2017-10-03", "open": 74.67, "high": 74.88, "low": 74.195, "close": 74.26, "volume": 12186591.0},
    {"date": "2017-10-04", "open": 74.0, "high": 74.72, "low": 73.71, "close": 74.69, "volume": 13295159.0},
    {"date": "2017-10-05", "open": 75.22, "high": 76.12, "low": 74.96, "close": 75.97, "volume": 21189637.0},
    {"date": "2017-10-06", "open": 75.67, "high": 76.03, "low": 75.54, "close": 76.0, "volume": 13946655.0},
    {"date": "2017-10-09", "open": 75.97, "high": 76.55, "low": 75.86, "close": 76.29, "volume": 11386471.0},
    {"date": "2017-10-10", "open": 76.33, "high": 76.63, "low": 76.14, "close": 76.29, "volume": 13941382.0},
    {"date": "2017-10-11", "open": 76.36, "high": 76.46, "low": 75.95, "close": 76.42, "volume": 15381253.0},
    {"date": "2017-10-12", "open": 76.49, "high": 77.29, "low": 76.37, "close": 77.12, "volume": 17269532.0},
    {"date": "2017-10-13", "open": 77.59, "high": 77.87, "low": 77.29, "close": 77.49, "volume": 15319789.0},
    {"date": "2017-10-16", "open": 77.42, "high": 77.81, "low": 77.35, "close": 77.65, "volume": 12362071.0},
    {"date": "2017-10-17", "open": 77.47, "high": 77.62, "low": 77.25, "close": 77.59, "volume": 16076735.0},
    {"date": "2017-10-18", "open": 77.67, "high": 77.85, "low": 77.37, "close": 77.61, "volume": 13288965.0},
    {"date": "2017-10-19", "open": 77.57, "high": 77.93, "low": 77.35, "close": 77.91, "volume": 15087473.0},
    {"date": "2017-10-20", "open": 78.32, "high": 78.97, "low": 78.22, "close": 78.81, "volume": 22854847.0},
    {"date": "2017-10-23", "open": 78.99, "high": 79.34, "low": 78.76, "close": 78.83, "volume": 20609965.0},
    {"date": "2017-10-24", "open": 78.9, "high": 79.2, "low": 78.46, "close": 78.86, "volume": 17364872.0},
    {"date": "2017-10-25", "open": 78.58, "high": 79.1, "low": 78.01, "close": 78.63, "volume": 20401390.0},
    {"date": "2017-10-26", "open": 79.2, "high": 79.42, "low": 78.75, "close": 78.76, "volume": 31601122.0},
    {"date": "2017-10-27", "open": 84.37, "high": 86.2, "low": 83.61, "close": 83.81, "volume": 71024821.0},
    {"date": "2017-10-30", "open": 83.8, "high": 84.325, "low": 83.105, "close": 83.89, "volume": 31756653.0},
    {"date": "2017-10-31", "open": 84.36, "high": 84.36, "low": 83.11, "close": 83.18, "volume": 27086575.0},
    {"date": "2017-11-01", "open": 83.68, "high": 83.76, "low": 82.88, "close": 83.18, "volume": 22307371.0},
    {"date": "2017-11-02", "open": 83.35, "high": 84.46, "low": 83.12, "close": 84.05, "volume": 23992945.0},
    {"date": "2017-11-03", "open": 84.08, "high": 84.54, "low": 83.4, "close": 84.14, "volume": 17633543.0},
    {"date": "2017-11-06", "open": 84.2, "high": 84.7, "low": 84.0825, "close": 84.47, "volume": 19852151.0},
    {"date": "2017-11-07", "open": 84.77, "high": 84.9, "low": 83.93, "close": 84.26, "volume": 17927878.0},
    {"date": "2017-11-08", "open": 84.14, "high": 84.61, "low": 83.83, "close": 84.56, "volume": 18029584.0},
    {"date": "2017-11-09", "open": 84.11, "high": 84.27, "low": 82.9, "close": 84.09, "volume": 21175384.0},
    {"date": "2017-11-10", "open": 83.79, "high": 84.095, "low": 83.23, "close": 83.87, "volume": 19396301.0},
]

# The same window as arrays in the sample model's feature order.
SAMPLE_ARRAYS: list[list[float]] = [
    [row["open"], row["high"], row["low"], row["close"], row["volume"]] for row in SAMPLE_WINDOW
]

PREDICT_EXAMPLES: dict[str, dict[str, Any]] = {
    "rows": {
        "summary": "40 dated rows, oldest first (the sample model's window)",
        "value": {"model": "msft", "window": SAMPLE_WINDOW},
    },
    "arrays": {
        "summary": "The same window as arrays in the model's feature order",
        "value": {
            "model": "msft",
            "window": SAMPLE_ARRAYS,
        },
    },
    "pinned": {
        "summary": 'Pin a version (or use "alias")',
        "value": {"model": "msft", "version": 1, "window": SAMPLE_WINDOW},
    },
}

BATCH_EXAMPLES: dict[str, dict[str, Any]] = {
    "two_windows": {
        "summary": "Two windows in one call: one as rows, one as arrays",
        "value": {
            "model": "msft",
            "windows": [SAMPLE_WINDOW, PREDICT_EXAMPLES["arrays"]["value"]["window"]],
        },
    },
}

TRAIN_EXAMPLES: dict[str, dict[str, Any]] = {
    "gru": {
        "summary": "A small GRU on the bundled sample (about a minute)",
        "value": {"model": "msft-gru", "dataset": "msft", "architecture": "gru", "epochs": 5, "units": 32},
    },
    "horizon5": {
        "summary": "Five business days at once, with intervals per step",
        "value": {"model": "msft-h5", "dataset": "msft", "horizon": 5, "epochs": 5},
    },
}

ALIAS_EXAMPLES: dict[str, dict[str, Any]] = {
    "rollback": {"summary": "Point the alias at version 1", "value": {"version": 1, "reason": "rollback"}},
}

SCHEDULE_EXAMPLES: dict[str, dict[str, Any]] = {
    "after every close": {
        "summary": "Retrain 45 minutes after each close once a new row arrived",
        "value": {"dataset": "msft", "when": {"after_close_minutes": 45, "every_sessions": 1}, "min_new_rows": 1},
    },
    "weekly, with settings": {
        "summary": "Every fifth session, a GRU, at least five new rows",
        "value": {
            "dataset": "msft",
            "when": {"after_close_minutes": 60, "every_sessions": 5},
            "min_new_rows": 5,
            "training": {"architecture": "gru", "epochs": 20},
            "enabled": True,
        },
    },
}

# TensorFlow Serving's three request forms, as its REST API documentation writes them.
TF_SERVING_EXAMPLES: dict[str, dict[str, Any]] = {
    "row format": {"value": {"instances": [SAMPLE_ARRAYS]}},
    "named row format": {"value": {"signature_name": "serving_default", "instances": [{"window": SAMPLE_ARRAYS}]}},
    "columnar format": {"value": {"inputs": {"window": [SAMPLE_ARRAYS]}}},
}

# The session after the sample's last day (2017-11-10), in the sample's columns.
APPEND_ROW: dict[str, Any] = {
    "Date": "2017-11-13",
    "Open": 83.66,
    "High": 83.94,
    "Low": 83.46,
    "Close": 83.93,
    "Volume": 14197535,
}
APPEND_EXAMPLES: dict[str, dict[str, Any]] = {
    "one_day": {"summary": "One new day (a retry of it changes nothing)", "value": {"rows": [APPEND_ROW]}},
    "correction": {
        "summary": "Correct a stored day (logged)",
        "value": {"rows": [{**APPEND_ROW, "Close": 83.95}], "replace": True},
    },
}
APPEND_CSV_EXAMPLE = "Date,Open,High,Low,Close,Volume\n2017-11-13,83.66,83.94,83.46,83.93,14197535\n"


# A /models/{name}/monitoring answer (one window shown; last_60, last_250 and since_live have its shape).
_COVERAGE_EXAMPLE: dict[str, Any] = {
    "80": {
        "nominal": 0.8,
        "coverage": 0.75,
        "observations": 20,
        "breaches": 5,
        "direction": "under",
        "kupiec": {"lr": 0.2953, "p_value": 0.5869},
        "christoffersen": {"lr": 1.343, "p_value": 0.2464},
    },
    "90": {
        "nominal": 0.9,
        "coverage": 0.9,
        "observations": 20,
        "breaches": 2,
        "direction": "on",
        "kupiec": {"lr": 0.0, "p_value": 1.0},
        "christoffersen": {"lr": 0.2289, "p_value": 0.6324},
    },
    "95": {
        "nominal": 0.95,
        "coverage": 0.9,
        "observations": 20,
        "breaches": 2,
        "direction": "under",
        "kupiec": {"lr": 0.8262, "p_value": 0.3634},
        "christoffersen": {"lr": 0.2289, "p_value": 0.6324},
    },
}
_STEP_EXAMPLE: dict[str, Any] = {
    "sessions": 20,
    "forecasts": 20,
    "scores": 20,
    "coverage": {"80": 0.75, "90": 0.9, "95": 0.9},
    "mean_abs_log_error": 0.009119,
    "naive_mean_abs_log_error": 0.008962,
    "ratio_to_naive": 1.018,
}
_REPLAY_EXAMPLE: dict[str, Any] = {
    "sessions": 40,
    "forecasts": 40,
    "scores": 40,
    "coverage": {"80": 0.75, "90": 0.875, "95": 0.975},
    "mean_abs_log_error": 0.009593,
    "naive_mean_abs_log_error": 0.008785,
    "ratio_to_naive": 1.092,
}
MONITORING_EXAMPLE: dict[str, Any] = {
    "model": "msft",
    "served_version": 3,
    "status": "ok",
    "status_of": {"version": 3, "served_as": "champion"},
    "thresholds": {
        "coverage_alpha": 0.01,
        "coverage_window": "last_250",
        "skill_alpha": 0.05,
        "skill_e_value": 20.0,
        "skill_window": "since_live",
        "min_scores": 20,
    },
    "kept": {"kept": 175, "hits": 612, "undated": 4},
    "unscorable": 4,
    "split_suspect": 1,
    "groups": [
        {
            "version": 3,
            "served_as": "champion",
            "status": "ok",
            "reasons": [],
            "live_sessions": 130,
            "first_origin": "2024-01-01",
            "last_origin": "2024-05-09",
            "split_suspect": 1,
            "windows": {
                "last_20": {
                    "sessions": 20,
                    "forecasts": 20,
                    "scores": 20,
                    "first_origin": "2024-04-20",
                    "last_origin": "2024-05-09",
                    "coverage": _COVERAGE_EXAMPLE,
                    "mean_abs_log_error": 0.009119,
                    "naive_mean_abs_log_error": 0.008962,
                    "ratio_to_naive": 1.018,
                    "skill": {
                        "scores": 20,
                        "wins": 9,
                        "losses": 11,
                        "ties": 0,
                        "e_value_better": 0.1973,
                        "e_value_worse": 0.3973,
                        "alpha": 0.05,
                        "beats_naive": False,
                        "worse_than_naive": False,
                    },
                    "direction": {"hit_rate": 0.5, "always_up_rate": 0.4, "scored": 20},
                    "per_step": [{"step": 1, **_STEP_EXAMPLE}],
                    "all_steps": _STEP_EXAMPLE,
                }
            },
            "skill_test": {
                "scores": 130,
                "threshold": 20.0,
                "e_value_better": 0.05114,
                "e_value_better_max": 1.9,
                "better_since": None,
                "e_value_worse": 0.4114,
                "e_value_worse_max": 0.7043,
                "worse_since": None,
            },
            "replay": {"all_steps": _REPLAY_EXAMPLE, "per_step": [{"step": 1, **_REPLAY_EXAMPLE}]},
        }
    ],
}
