"""Every forecast answer's `forecast_id`s, and the hand-off of its forecasts to the ledger.

Each protocol calls `keep` once per answer with what `forecast_windows`
returned. The ids are made here, without a lookup; the ledger (when on)
gets a reference to the arrays and writes them later, off the request's
path. See docs/ledger.md.
"""

from __future__ import annotations

import time

from starlette.types import Scope

from app.core.logging import REQUEST_ID
from app.ledger.records import Served, forecast_id
from app.serving.forecasting import Forecasts


def keep(scope: Scope, found: Forecasts) -> list[str]:
    """The forecasts' ids, in window order; the forecasts handed to the app's ledger when it keeps one."""
    served = found.served
    served_as = found.skill["served_as"]
    ids = [
        forecast_id(served.name, served.version, served_as, origin, found.windows[index])
        for index, origin in enumerate(found.last_dates)
    ]
    ledger = getattr(scope["app"].state, "ledger", None)
    if ledger is not None:
        ledger.keep(
            Served(
                model=served.name,
                version=served.version,
                served_as=served_as,
                metadata=served.metadata,
                spec=served.model.spec,
                windows=found.windows,
                origins=found.last_dates,
                outputs=found.outputs,
                levels=found.levels,
                ids=ids,
                key_name=(scope.get("state") or {}).get("key_name"),
                request_id=REQUEST_ID.get(),
                served_at=time.time(),
            )
        )
    return ids


__all__ = ["keep"]
