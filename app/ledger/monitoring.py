"""The monitoring answer: how a model's served forecasts did, from its score rows, with a status.

Pure: score rows (`LedgerStore.scores`) and settings in, plain JSON out.
Per version and `served_as`, over the last 20, 60 and 250 scored sessions
and since the version went live. Headline figures and every test use step
1 (one non-overlapping forecast per session, as the tests assume); steps
beyond it get plain figures. Replayed scores have their own block and
split-suspect rows are counted and left out, so neither moves a live
figure. The status thresholds come from settings and are echoed in the
answer. See docs/ledger.md, "Monitoring".
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from app.ledger.shadow import CHALLENGER, live_comparison
from app.ledger.statistics import (
    always_up_rate,
    christoffersen_independence,
    directional_hit_rate,
    kupiec_pof,
    ratio_to_naive,
    sequential_skill_test,
    sign_e_processes,
)

Row = Mapping[str, Any]

# Window name and how many of the latest scored sessions it takes (None: every one since the version went live).
WINDOWS: tuple[tuple[str, int | None], ...] = (
    ("last_20", 20),
    ("last_60", 60),
    ("last_250", 250),
    ("since_live", None),
)
# Coverage is judged over a year of sessions: long enough for Kupiec's test to see a few points of
# miscoverage, short enough to follow the model as it is now.
COVERAGE_WINDOW = "last_250"
# The skill test runs since the version went live: an e-process is valid from its start, not from a sliding one.
SKILL_WINDOW = "since_live"
# What /metrics exposes as `stockcast_online_status`: worse is higher.
STATUS_CODES: dict[str, int] = {"ok": 0, "insufficient_data": 1, "coverage_breach": 2, "skill_lost": 3}
# The one served_as a default (unpinned) request never has.
PINNED = "pinned"


def monitoring_report(
    scores: Sequence[Row],
    counts: Mapping[str, int] | None,
    *,
    coverage_alpha: float,
    skill_alpha: float,
    min_scores: int,
    served_version: int | None = None,
    aliases: Mapping[str, int] | None = None,
) -> dict[str, Any]:
    """The monitoring answer for one model's score rows; `counts` is `LedgerStore.counts` (None: not read).

    `served_version` is the version the model serves by default now: the
    model's status is that version's unpinned group's; without one, the
    worst status of any group but the challenger's, which serves no one.
    With a `champion` and a `challenger` in `aliases`, `challenger` holds
    the paired live test of the two (`app.ledger.shadow.live_comparison`)
    and each one's coverage tests.
    """
    kept = [row for row in scores if not row["split_suspect"]]
    groups = [
        group_report(
            key,
            group_rows,
            split_suspect=sum(1 for row in scores if _key(row) == key and row["split_suspect"]),
            coverage_alpha=coverage_alpha,
            skill_alpha=skill_alpha,
            min_scores=min_scores,
        )
        for key, group_rows in _grouped(kept, {_key(row) for row in scores})
    ]
    chosen = status_group(groups, served_version)
    # The challenger serves no one: its group never sets the model's status.
    serving = [group for group in groups if group["served_as"] != CHALLENGER]
    if chosen is not None:
        status, status_of = chosen["status"], {"version": chosen["version"], "served_as": chosen["served_as"]}
    elif served_version is not None or not serving:
        status, status_of = "insufficient_data", None
    else:
        worst = max(serving, key=lambda group: STATUS_CODES[group["status"]])
        status, status_of = worst["status"], {"version": worst["version"], "served_as": worst["served_as"]}
    return {
        "served_version": served_version,
        "status": status,
        "status_of": status_of,
        "thresholds": {
            "coverage_alpha": coverage_alpha,
            "coverage_window": COVERAGE_WINDOW,
            "skill_alpha": skill_alpha,
            "skill_e_value": 1 / skill_alpha,
            "skill_window": SKILL_WINDOW,
            "min_scores": min_scores,
        },
        "kept": dict(counts) if counts is not None else None,
        "unscorable": int(counts.get("undated", 0)) if counts is not None else None,
        "split_suspect": sum(1 for row in scores if row["split_suspect"]),
        "groups": groups,
        "challenger": challenger_block(kept, groups, aliases or {}),
    }


def challenger_block(
    scores: Sequence[Row], groups: Sequence[Mapping[str, Any]], aliases: Mapping[str, int]
) -> dict[str, Any] | None:
    """The challenger beside the champion: the paired live test and both coverage tests; None without both."""
    champion, challenger = aliases.get("champion"), aliases.get(CHALLENGER)
    if champion is None or challenger is None or champion == challenger:
        return None

    def coverage_of(version: int, served_as: str) -> dict[str, Any] | None:
        group = next((g for g in groups if (g["version"], g["served_as"]) == (version, served_as)), None)
        return None if group is None else group["windows"][COVERAGE_WINDOW]["coverage"]

    return {
        **live_comparison(scores, champion, challenger),
        "coverage_window": COVERAGE_WINDOW,
        "champion_coverage": coverage_of(champion, "champion"),
        "challenger_coverage": coverage_of(challenger, CHALLENGER),
    }


def status_group(groups: Sequence[Mapping[str, Any]], served_version: int | None) -> Mapping[str, Any] | None:
    """The group whose status is the model's: the served version's unpinned traffic with the most live sessions.

    None without a served version, or when it has no scores yet.
    """
    candidates = [
        group
        for group in groups
        if group["version"] == served_version and group["served_as"] not in (PINNED, CHALLENGER)
    ]
    if served_version is None or not candidates:
        return None
    return max(candidates, key=lambda group: (group["live_sessions"], group["served_as"] == "champion"))


def reported_group(report: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The group of a `monitoring_report` answer whose status is the model's (its `status_of`), or None."""
    chosen = report["status_of"]
    if chosen is None:
        return None
    return next(
        group
        for group in report["groups"]
        if (group["version"], group["served_as"]) == (chosen["version"], chosen["served_as"])
    )


def group_report(
    key: tuple[int, str],
    rows: Sequence[Row],
    *,
    split_suspect: int,
    coverage_alpha: float,
    skill_alpha: float,
    min_scores: int,
) -> dict[str, Any]:
    """Everything about one (version, served_as): windows of live scores, the status and why, the replays."""
    ordered = time_order(rows)
    levels = levels_of(ordered)
    live = [row for row in ordered if not row["replay"]]
    replay = [row for row in ordered if row["replay"]]
    windows = {
        name: window_figures(live if count is None else last_sessions(live, count), levels, skill_alpha)
        for name, count in WINDOWS
    }
    skill = skill_path(step_rows(live, 1), skill_alpha)
    sessions = len({row["origin"] for row in live})
    status, reasons = group_status(
        sessions, windows[COVERAGE_WINDOW]["coverage"], skill, coverage_alpha=coverage_alpha, min_scores=min_scores
    )
    return {
        "version": key[0],
        "served_as": key[1],
        "status": status,
        "reasons": reasons,
        "live_sessions": sessions,
        "first_origin": min((row["origin"] for row in live), default=None),
        "last_origin": max((row["origin"] for row in live), default=None),
        "split_suspect": split_suspect,
        "windows": windows,
        "skill_test": skill,
        "replay": {"all_steps": plain_figures(replay, levels), "per_step": per_step_figures(replay, levels)},
    }


def group_status(
    sessions: int,
    coverage: Mapping[str, Mapping[str, Any]],
    skill: Mapping[str, Any],
    *,
    coverage_alpha: float,
    min_scores: int,
) -> tuple[str, list[str]]:
    """The status and the sentences that explain it.

    insufficient_data below `min_scores` live sessions; else skill_lost once
    the worse-than-naive e-process has crossed 1/alpha (the alarm stands:
    Ville's inequality bounds the chance of ever crossing under the null);
    else coverage_breach when Kupiec rejects a band that covers too little.
    """
    if sessions < min_scores:
        return "insufficient_data", [f"{sessions} scored sessions; a status needs {min_scores}"]
    if skill["worse_since"] is not None:
        return "skill_lost", [
            f"the e-process of 'worse than naive' reached {skill['e_value_worse_max']:.4g} >= {skill['threshold']:.4g}"
            f" on {skill['worse_since']} (step 1, {skill['scores']} live scores)"
        ]
    breaches = [
        f"the {level} % band covered {figures['coverage']:.3f} of {figures['observations']} step-1 forecasts"
        f" ({COVERAGE_WINDOW}); Kupiec p = {figures['kupiec']['p_value']:.3g} < {coverage_alpha}: under-covering"
        for level, figures in coverage.items()
        if figures["direction"] == "under"
        and figures["kupiec"]["p_value"] is not None
        and figures["kupiec"]["p_value"] < coverage_alpha
    ]
    if breaches:
        return "coverage_breach", breaches
    return "ok", []


def window_figures(rows: Sequence[Row], levels: Sequence[str], skill_alpha: float) -> dict[str, Any]:
    """One window's figures: step-1 coverage with its tests, error ratio, skill test and direction; per step."""
    first_step = step_rows(rows, 1)
    model, naive = _abs_log_errors(first_step)
    return {
        "sessions": len({row["origin"] for row in rows}),
        "forecasts": len({row["forecast_id"] for row in rows}),
        "scores": len(rows),
        "first_origin": min((row["origin"] for row in rows), default=None),
        "last_origin": max((row["origin"] for row in rows), default=None),
        "coverage": {level: coverage_figures(first_step, level) for level in levels},
        "mean_abs_log_error": _mean(model),
        "naive_mean_abs_log_error": _mean(naive),
        "ratio_to_naive": ratio_to_naive(model, naive),
        "skill": sequential_skill_test(model, naive, alpha=skill_alpha),
        "direction": direction_figures(first_step),
        "per_step": per_step_figures(rows, levels),
        "all_steps": plain_figures(rows, levels),
    }


def coverage_figures(rows: Sequence[Row], level: str) -> dict[str, Any]:
    """A band's realised coverage over rows in time order, Kupiec's test of its rate, Christoffersen's of clustering."""
    nominal = nominal_of(level)
    breaches = np.array([not row["inside"][level] for row in rows if level in row["inside"]], dtype=bool)
    coverage = float(np.mean(~breaches)) if breaches.size else None
    kupiec = kupiec_pof(breaches, nominal)
    independence = christoffersen_independence(breaches)
    return {
        "nominal": nominal,
        "coverage": coverage,
        "observations": int(breaches.size),
        "breaches": int(breaches.sum()),
        "direction": None if coverage is None else _direction(coverage, nominal),
        "kupiec": {"lr": kupiec["lr"], "p_value": kupiec["p_value"]},
        "christoffersen": {"lr": independence["lr"], "p_value": independence["p_value"]},
    }


def skill_path(rows: Sequence[Row], alpha: float) -> dict[str, Any]:
    """The sign e-processes over rows in time order: now, at their highest, and the target date each first crossed."""
    model, naive = _abs_log_errors(rows)
    better, worse = sign_e_processes(model, naive)
    threshold = 1 / alpha
    return {
        "scores": len(rows),
        "threshold": threshold,
        "e_value_better": float(better[-1]) if better.size else 1.0,
        "e_value_better_max": float(better.max()) if better.size else 1.0,
        "better_since": _first_crossing(rows, better, threshold),
        "e_value_worse": float(worse[-1]) if worse.size else 1.0,
        "e_value_worse_max": float(worse.max()) if worse.size else 1.0,
        "worse_since": _first_crossing(rows, worse, threshold),
    }


def direction_figures(rows: Sequence[Row]) -> dict[str, Any]:
    """Directional hit rate (sign of log(forecast/naive) against log(actual/naive)) beside the always-up rate."""
    forecast = np.log(np.array([row["forecast"] / row["naive"] for row in rows], dtype=np.float64))
    actual = np.log(np.array([row["actual"] / row["naive"] for row in rows], dtype=np.float64))
    return {
        "hit_rate": directional_hit_rate(forecast, actual),
        "always_up_rate": always_up_rate(actual),
        "scored": int(np.sum((forecast != 0) & (actual != 0))),
    }


def plain_figures(rows: Sequence[Row], levels: Sequence[str]) -> dict[str, Any]:
    """Counts, realised coverage per level, and mean |log error| against naive's: no tests."""
    model, naive = _abs_log_errors(rows)
    return {
        "sessions": len({row["origin"] for row in rows}),
        "forecasts": len({row["forecast_id"] for row in rows}),
        "scores": len(rows),
        "coverage": {level: _coverage(rows, level) for level in levels},
        "mean_abs_log_error": _mean(model),
        "naive_mean_abs_log_error": _mean(naive),
        "ratio_to_naive": ratio_to_naive(model, naive),
    }


def per_step_figures(rows: Sequence[Row], levels: Sequence[str]) -> list[dict[str, Any]]:
    """`plain_figures` of each forecast step, step 1 first."""
    steps = sorted({int(row["step"]) for row in rows})
    return [{"step": step, **plain_figures(step_rows(rows, step), levels)} for step in steps]


def time_order(rows: Iterable[Row]) -> list[Row]:
    """Rows in the order their actuals became known: by target date, then origin, forecast and step."""
    return sorted(rows, key=lambda row: (row["target"], row["origin"], row["forecast_id"], row["step"]))


def last_sessions(rows: Sequence[Row], count: int) -> list[Row]:
    """The rows whose origin is one of the `count` latest distinct origins (scored sessions)."""
    kept = set(sorted({row["origin"] for row in rows})[-count:])
    return [row for row in rows if row["origin"] in kept]


def step_rows(rows: Sequence[Row], step: int) -> list[Row]:
    """The rows of one forecast step, in the order given."""
    return [row for row in rows if int(row["step"]) == step]


def levels_of(rows: Iterable[Row]) -> list[str]:
    """Band level keys ("80", "90", ...) the rows were scored at, narrowest first."""
    return sorted({level for row in rows for level in row["inside"]}, key=float)


def nominal_of(level: str) -> float:
    """A level key's nominal coverage: "90" -> 0.9."""
    return float(level) / 100


def _key(row: Row) -> tuple[int, str]:
    return int(row["version"]), str(row["served_as"])


def _grouped(rows: Sequence[Row], keys: set[tuple[int, str]]) -> list[tuple[tuple[int, str], list[Row]]]:
    # Newest version first; every key that has rows at all gets a group, split-suspect ones too.
    ordered = sorted(keys, key=lambda key: (-key[0], key[1]))
    return [(key, [row for row in rows if _key(row) == key]) for key in ordered]


def _abs_log_errors(rows: Sequence[Row]) -> tuple[np.ndarray, np.ndarray]:
    model = np.abs(np.array([row["log_error"] for row in rows], dtype=np.float64))
    naive = np.abs(np.array([row["naive_log_error"] for row in rows], dtype=np.float64))
    return model, naive


def _coverage(rows: Sequence[Row], level: str) -> float | None:
    inside = [bool(row["inside"][level]) for row in rows if level in row["inside"]]
    return float(np.mean(inside)) if inside else None


def _mean(values: np.ndarray) -> float | None:
    return float(np.mean(values)) if values.size else None


def _direction(coverage: float, nominal: float) -> str:
    return "under" if coverage < nominal else "over" if coverage > nominal else "on"


def _first_crossing(rows: Sequence[Row], path: np.ndarray, threshold: float) -> str | None:
    crossed = np.flatnonzero(path >= threshold)
    return str(rows[int(crossed[0])]["target"]) if crossed.size else None


__all__ = [
    "COVERAGE_WINDOW",
    "STATUS_CODES",
    "WINDOWS",
    "Row",
    "challenger_block",
    "group_report",
    "levels_of",
    "monitoring_report",
    "nominal_of",
    "reported_group",
    "status_group",
    "step_rows",
    "time_order",
]
