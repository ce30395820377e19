"""When the monitor demotes a champion: its status has been coverage_breach or skill_lost for N sessions.

Pure: score rows, the alias log and thresholds in; a `Demotion` or None out. The status at a session is
`monitoring_report`'s for the champion as served (its unpinned group), over the rows up to that session's
origin. The last N sessions of the champion's live step-1 forecasts must all be breaches, and all scored
after the champion alias last moved, so a champion set again by hand gets N sessions before it can go.
See docs/ledger.md, "Demotion".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from app.ledger.monitoring import COVERAGE_WINDOW, PINNED, monitoring_report, reported_group
from training.store import CHAMPION

Row = Mapping[str, Any]
# Statuses that count against a champion.
DEMOTING = ("coverage_breach", "skill_lost")
# Who the alias log says moved the alias.
MONITOR = "monitor"


@dataclass(frozen=True)
class Demotion:
    """Why a champion goes: its version, the latest status, the sentence for the alias log, and the figures."""

    version: int
    status: str
    reason: str
    figures: dict[str, Any] = field(default_factory=dict)


def champion_since(alias_log: Sequence[Mapping[str, Any]], version: int) -> str | None:
    """When `champion` last moved to `version` (the alias log's `at`), or None if the log never says."""
    moves = [entry for entry in alias_log if entry.get("alias") == CHAMPION and entry.get("to") == version]
    return str(moves[-1]["at"]) if moves else None


def demotions_of(alias_log: Sequence[Mapping[str, Any]]) -> int:
    """How many times the monitor took a model's champion away (for /metrics)."""
    return sum(1 for entry in alias_log if entry.get("by") == MONITOR and entry.get("to") is None)


def demotion_due(
    scores: Sequence[Row],
    *,
    champion: int,
    since: str | None,
    sessions: int,
    coverage_alpha: float,
    skill_alpha: float,
    min_scores: int,
) -> Demotion | None:
    """A Demotion when the champion's status was coverage_breach or skill_lost at each of its last `sessions`
    scored sessions (those scored after `since`); None otherwise, or when `sessions` is 0 (never demote)."""
    if sessions < 1:
        return None
    origins = sorted(
        {
            str(row["origin"])
            for row in scores
            if row["version"] == champion
            and row["step"] == 1
            and row["served_as"] != PINNED
            and not row["replay"]
            and not row["split_suspect"]
            and (since is None or str(row["scored_at"]) > since)
        }
    )[-sessions:]
    if len(origins) < sessions:
        return None
    reports = [
        monitoring_report(
            [row for row in scores if str(row["origin"]) <= origin],
            None,
            coverage_alpha=coverage_alpha,
            skill_alpha=skill_alpha,
            min_scores=min_scores,
            served_version=champion,
        )
        for origin in origins
    ]
    statuses = [str(report["status"]) for report in reports]
    if any(status not in DEMOTING for status in statuses):
        return None
    latest = reported_group(reports[-1])
    assert latest is not None  # a demoting status comes from a group
    status = statuses[-1]
    reasons = list(latest["reasons"])
    window = latest["windows"][COVERAGE_WINDOW]
    figures = {
        "status": status,
        "sessions": origins,
        "statuses": statuses,
        "reasons": reasons,
        "live_sessions": latest["live_sessions"],
        "coverage": {
            level: {"coverage": figures["coverage"], "kupiec_p_value": figures["kupiec"]["p_value"]}
            for level, figures in window["coverage"].items()
        },
        "ratio_to_naive": window["ratio_to_naive"],
        "e_value_worse": latest["skill_test"]["e_value_worse"],
    }
    reason = (
        f"demoted by the monitor: status {status} at each of the last {sessions} scored sessions"
        f" ({origins[0]} to {origins[-1]}); {reasons[0] if reasons else status}"
    )
    return Demotion(champion, status, reason, figures)


__all__ = ["DEMOTING", "MONITOR", "Demotion", "champion_since", "demotion_due", "demotions_of"]
