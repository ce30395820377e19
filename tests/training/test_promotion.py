"""train_and_promote moves the aliases the gate's decision names: champion, or challenger on too little evidence."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.helpers import tiny_clean, tiny_config
from training import promotion
from training.fitting import TrainingRun
from training.gate import GateDecision
from training.store import CHALLENGER, CHAMPION, ModelStore

pytestmark = pytest.mark.tf


def test_a_candidate_with_too_little_evidence_becomes_the_challenger(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def tie(*_args: Any, **_kwargs: Any) -> GateDecision:
        return GateDecision(
            False, "a tie keeps the champion", 0.9, None, None, "walk-forward backtest", {"challenger": True}
        )

    monkeypatch.setattr(promotion, "decide", tie)
    store = ModelStore(tmp_path / "models")
    outcome, decision = promotion.train_and_promote(
        TrainingRun("m", tiny_clean(), {"name": "msft.csv", "sha256": "m"}, tiny_config()), store
    )

    assert not decision.promoted
    assert store.aliases("m") == {CHALLENGER: outcome.version}
    entry = store.alias_log("m")[-1]
    assert (entry["alias"], entry["to"], entry["reason"]) == (CHALLENGER, 1, "challenger: a tie keeps the champion")
    assert CHAMPION not in store.aliases("m")
