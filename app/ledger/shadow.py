"""The shadow challenger: its forecasts for the champion's logged windows, made after the fact, and the live test.

Never on the live path. After scoring, a job takes each dated forecast the
ledger kept of the champion, rebuilds its window from the dataset (the last
`window` rows ending at its origin, in the challenger's feature order), has
the challenger forecast them (in a child process: Keras) and writes ledger
rows `served_as` "challenger" with the champion forecast's `served_at` and
`data_through`, so a window replayed for the champion is replayed for the
challenger too. They are then scored like any other. `live_comparison` is
the paired Diebold-Mariano test on step-1 live |log errors| of the two on
the same targets. Pure here: frames and rows in, rows and figures out.
See docs/ledger.md, "Shadow challenger".
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from app.ledger.records import Served, forecast_id, in_sample, rows_of
from training import significance
from training.gate import attempt_level, backtest_holds, skill_of
from training.spec import WindowSpec
from training.store import CHALLENGER

# Forecasts a set of raw windows (n, window, features) with the challenger: (n, 1 + 2 * levels, horizon).
Forecaster = Callable[[np.ndarray], np.ndarray]
Row = Mapping[str, Any]


def champion_origins(forecasts: Sequence[Row], replayed: set[str]) -> dict[str, Row]:
    """The first logged dated forecast of each origin (ISO date) not yet replayed for the challenger."""
    found: dict[str, Row] = {}
    for row in sorted(forecasts, key=lambda row: (str(row["served_at"]), str(row["forecast_id"]))):
        origin = row.get("origin")
        if origin and row["served_as"] != CHALLENGER and origin not in replayed and origin not in found:
            found[str(origin)] = row
    return found


def windows_at(frame: pd.DataFrame, spec: WindowSpec, origins: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """The windows ending at each origin the dataset holds with `spec.window` rows up to it, and those origins."""
    days = [day.isoformat() for day in pd.to_datetime(frame["date"]).dt.date]
    position = {day: index for index, day in enumerate(days)}
    values = frame[list(spec.features)].to_numpy(dtype=np.float64)
    kept, windows = [], []
    for origin in origins:
        end = position.get(origin)
        if end is None or end + 1 < spec.window:
            continue
        kept.append(origin)
        windows.append(values[end + 1 - spec.window : end + 1])
    shape = (0, spec.window, len(spec.features))
    return kept, np.stack(windows) if windows else np.empty(shape)


def challenger_rows(
    metadata: dict[str, Any],
    spec: WindowSpec,
    champion: Mapping[str, Row],
    origins: Sequence[str],
    windows: np.ndarray,
    outputs: np.ndarray,
) -> list[dict[str, Any]]:
    """Ledger rows of the challenger's forecasts, each carrying its champion forecast's served_at and data_through."""
    if not origins:
        return []
    name, version = str(metadata["name"]), int(metadata["version"])
    dates: list[dt.date | None] = [dt.date.fromisoformat(origin) for origin in origins]
    served = Served(
        model=name,
        version=version,
        served_as=CHALLENGER,
        metadata=metadata,
        spec=spec,
        windows=windows,
        origins=dates,
        outputs=outputs,
        levels=levels_of(metadata),
        ids=[forecast_id(name, version, CHALLENGER, day, window) for day, window in zip(dates, windows, strict=True)],
        key_name=None,
        request_id=None,
        served_at=0.0,
    )
    rows = rows_of(served)
    for row, origin in zip(rows, origins, strict=True):
        logged = champion[origin]
        row["served_at"] = logged["served_at"]
        row["data_through"] = logged.get("data_through")
    return rows


def levels_of(metadata: dict[str, Any]) -> tuple[str, ...]:
    """A version's band levels in the order its forecasts stack their bounds (`ForecastSteps.interval_levels`)."""
    intervals = metadata.get("intervals") or None
    return tuple(intervals["half_widths"]) if intervals else ()


def shadow_rows(
    metadata: dict[str, Any],
    spec: WindowSpec,
    frame: pd.DataFrame,
    champion_forecasts: Sequence[Row],
    replayed: set[str],
    forecast: Forecaster,
) -> list[dict[str, Any]]:
    """The challenger's ledger rows for every logged champion origin not replayed yet (`forecast` runs the network).

    Origins whose targets the challenger was trained on are left out: a
    forecast of its own training data is no evidence.
    """
    trained_through = metadata.get("trained_through")
    champion = {
        origin: row
        for origin, row in champion_origins(champion_forecasts, replayed).items()
        if not in_sample(dt.date.fromisoformat(origin), _date(trained_through))
    }
    origins, windows = windows_at(frame, spec, sorted(champion))
    if not origins:
        return []
    return challenger_rows(metadata, spec, champion, origins, windows, forecast(windows))


def paired_errors(scores: Sequence[Row], champion: int, challenger: int) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Step-1 live |log errors| of the champion and the challenger on the targets both have, oldest first.

    The champion's are its unpinned forecasts (`served_as` champion); split
    suspects are left out. With several champion rows on one target (the
    same origin asked for with different windows) the first kept is used.
    """

    def by_target(version: int, served_as: str) -> dict[str, float]:
        found: dict[str, float] = {}
        for row in sorted(scores, key=lambda row: (row["target"], row["origin"], row["forecast_id"])):
            if (
                int(row["version"]) == version
                and row["served_as"] == served_as
                and int(row["step"]) == 1
                and not row["replay"]
                and not row["split_suspect"]
            ):
                found.setdefault(str(row["target"]), abs(float(row["log_error"])))
        return found

    theirs, ours = by_target(champion, "champion"), by_target(challenger, CHALLENGER)
    targets = sorted(set(theirs) & set(ours))
    return (
        targets,
        np.array([theirs[target] for target in targets], dtype=np.float64),
        np.array([ours[target] for target in targets], dtype=np.float64),
    )


def naive_errors(scores: Sequence[Row], version: int, targets: Sequence[str]) -> np.ndarray:
    """Step-1 |naive log errors| of the challenger's live scores on `targets`, in their order."""
    found: dict[str, float] = {}
    for row in scores:
        if int(row["version"]) == version and row["served_as"] == CHALLENGER and int(row["step"]) == 1:
            found.setdefault(str(row["target"]), abs(float(row["naive_log_error"])))
    return np.array([found[target] for target in targets], dtype=np.float64)


def live_comparison(scores: Sequence[Row], champion: int, challenger: int) -> dict[str, Any]:
    """The challenger against the champion (paired, same targets) and against naive, on step-1 live |log errors|.

    One-sided Diebold-Mariano tests (step 1, so no autocorrelation
    correction): "the challenger is no better" is the null of each.
    """
    targets, champion_loss, challenger_loss = paired_errors(scores, champion, challenger)
    naive_loss = naive_errors(scores, challenger, targets)
    enough = len(targets) >= 2
    return {
        "champion_version": champion,
        "challenger_version": challenger,
        "sessions": len(targets),
        "first_target": targets[0] if targets else None,
        "last_target": targets[-1] if targets else None,
        "champion_mean_abs_log_error": float(champion_loss.mean()) if targets else None,
        "challenger_mean_abs_log_error": float(challenger_loss.mean()) if targets else None,
        "vs_champion": significance.diebold_mariano(challenger_loss, champion_loss, 1) if enough else None,
        "vs_naive": significance.diebold_mariano(challenger_loss, naive_loss, 1) if enough else None,
    }


def live_promotion(
    scores: Sequence[Row],
    champion: int,
    challenger: int,
    challenger_metadata: dict[str, Any],
    *,
    level: float,
    min_sessions: int,
) -> dict[str, Any]:
    """Whether the challenger has earned `champion` on two kinds of evidence, with both tests and why.

    Its backtest must still meet the gate's criteria at `level`; the paired
    live test must reject "no better than the champion" and "no better than
    naive" over at least `min_sessions` paired sessions. The test is looked
    at after every scoring, so the k-th look (k = sessions - min_sessions +
    1) is judged at level / (k (k + 1)), as the gate spends it over attempts:
    no number of looks spends more than `level`.
    """
    live = live_comparison(scores, champion, challenger)
    backtest = skill_of(challenger_metadata, level)
    holds = backtest_holds(challenger_metadata, level)
    look = live["sessions"] - min_sessions + 1
    spent = attempt_level(level, look) if look >= 1 else None
    verdict = {"due": False, "backtest": {**backtest, "holds": holds}, "live": live, "look": look, "level": spent}

    def refused(reason: str) -> dict[str, Any]:
        return {**verdict, "reason": reason}

    if not holds:
        return refused(f"the backtest evidence of v{challenger} no longer meets the gate's criteria at {level}")
    if spent is None:
        return refused(f"{live['sessions']} paired live sessions; live promotion needs {min_sessions}")
    unbeaten = [
        f"{name} (p {test['p_value']:.4g})" if test is not None else f"{name} (no test)"
        for name, test in (("champion", live["vs_champion"]), ("naive", live["vs_naive"]))
        if test is None or not test["p_value"] < spent
    ]
    if unbeaten:
        return refused(f"no live evidence of beating {' or '.join(unbeaten)} at {spent:.4g}, the level of look {look}")
    return {
        **verdict,
        "due": True,
        "reason": f"promoted on live evidence: v{challenger} beats champion v{champion} (p"
        f" {live['vs_champion']['p_value']:.4g}) and naive (p {live['vs_naive']['p_value']:.4g}) over"
        f" {live['sessions']} live sessions at {spent:.4g} (look {look}); its backtest still holds at {level}",
    }


def _date(value: object) -> dt.date | None:
    return dt.date.fromisoformat(str(value)) if value else None


__all__ = [
    "CHALLENGER",
    "Forecaster",
    "challenger_rows",
    "champion_origins",
    "levels_of",
    "live_comparison",
    "live_promotion",
    "naive_errors",
    "paired_errors",
    "shadow_rows",
    "windows_at",
]
