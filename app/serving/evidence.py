"""The evidence block every answer carries, whatever the protocol: how the version came to be served and why.

One block, built here once per answer and shaped by each protocol: /predict
and /predict/batch put it in `skill`, V2 in its response `parameters` (as
`evidence_<key>` scalars), TF Serving beside `predictions` (`evidence`).

`promoted_by` says who made the served version champion: "gate" (the
promotion gate, or the ledger's monitor on live evidence), "manual" (an
alias moved by hand), or null for a version that is not the champion.
`beats_naive` is true only for a version the gate promoted: a network
refused for drift or coverage, or made champion by hand, has DM results
that the gate did not accept as skill. A naive answer (setting
`unpromoted_default=naive`) carries naive's own evidence, not the network's.
See docs/design.md, "Promotion gate and the default version".
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from app.ledger.demotion import MONITOR
from training.store import CHAMPION

# The block's keys, in the order answers list them.
EVIDENCE_KEYS: tuple[str, ...] = (
    "served_as",
    "promoted_by",
    "gate_verdict",
    "beats_naive",
    "beats_drift",
    "coverage_ok",
    "minimum_detectable_effect",
    "p_value",
    "ratio_to_naive",
)
# The prefix of the block's keys in V2 `parameters`, which hold scalars only.
V2_PREFIX = "evidence_"
GATE_REASON = "promoted by gate"
NOT_JUDGED = "not judged"


def promoted_by(alias_log: Sequence[dict[str, Any]], version: int) -> str | None:
    """ "gate" or "manual": who last moved `champion` to `version` (None: the log never did).

    A restore after a failed manual move puts back what was there, so the
    move before it decides.
    """
    for entry in reversed(alias_log):
        if entry.get("alias") != CHAMPION or entry.get("to") != version:
            continue
        reason = str(entry.get("reason") or "")
        if reason.startswith("restored:"):
            continue
        return "gate" if reason.startswith(GATE_REASON) or entry.get("by") == MONITOR else "manual"
    return None


def gate_verdict(attempts: Sequence[dict[str, Any]], version: int) -> str:
    """The gate's last verdict on `version` from the attempt ledger: promoted, challenger, refused or not judged."""
    for entry in reversed(attempts):
        if entry.get("version") == version:
            if entry.get("promoted"):
                return "promoted"
            return "challenger" if entry.get("challenger") else "refused"
    return NOT_JUDGED


def network_skill(skill: dict[str, Any], served_as: str, verdict: str, champion_by: str | None) -> dict[str, Any]:
    """The answer's `skill` for a network: its own evidence, with `beats_naive` only where the gate accepted it."""
    accepted = verdict == "promoted" or champion_by == "gate"
    return {
        "ratio_to_naive_price": None,
        "p_value_drift": None,
        **skill,
        "served_as": served_as,
        "promoted_by": champion_by,
        "gate_verdict": verdict,
        "beats_naive": bool(skill.get("beats_naive")) and accepted,
        "beats_drift": bool(skill.get("beats_drift")),
        "coverage_ok": skill.get("coverage_ok"),
        "minimum_detectable_effect": skill.get("minimum_detectable_effect"),
    }


def naive_skill(metadata: dict[str, Any], version: int, level: float) -> dict[str, Any]:
    """The answer's `skill` when the naive forecast is served: naive's own evidence, from the version's backtest.

    Naive is the reference, so it neither beats itself nor has a gate
    verdict; against drift its own DM test (recorded by the backtest) says.
    """
    evidence = (metadata.get("backtest") or {}).get("evidence") or {}
    against_drift = (evidence.get("naive_vs_drift_pooled") or {}).get("p_value")
    return {
        "served_as": "naive",
        "promoted_by": None,
        "gate_verdict": NOT_JUDGED,
        "beats_naive": False,
        "beats_drift": bool(against_drift is not None and against_drift < level),
        "coverage_ok": None,
        "minimum_detectable_effect": None,
        "p_value": None,
        "p_value_drift": against_drift,
        "ratio_to_naive": 1.0,
        "ratio_to_naive_price": 1.0,
        "basis": "the naive last-value forecast (setting unpromoted_default=naive): the reference itself; "
        + (
            f"against drift, one-sided DM on v{version}'s walk-forward backtest, level {level}"
            if against_drift is not None
            else "no backtest to test it against drift"
        ),
        "trained_through": metadata.get("trained_through"),
    }


def evidence_block(skill: dict[str, Any]) -> dict[str, Any]:
    """The block's keys from an answer's `skill`, in order; absent ones are null."""
    return {key: skill.get(key) for key in EVIDENCE_KEYS}


def v2_parameters(skill: dict[str, Any]) -> dict[str, str | int | float | bool]:
    """The block as V2 response parameters: prefixed scalars, nulls left out (V2 parameters hold no null)."""
    return {f"{V2_PREFIX}{key}": value for key, value in evidence_block(skill).items() if value is not None}
