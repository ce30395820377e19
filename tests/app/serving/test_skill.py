"""Every /predict answer says what evidence its version has, and how it was chosen; dates follow the calendar."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.api.schemas import BatchPredictResponse, PredictResponse
from app.serving.evidence import evidence_block
from tests.fakes import fake_app
from tests.helpers import SAMPLE, WINDOW_ROWS, every_day, local_client, sample_rows, tiny_clean, tiny_config
from training.fitting import TrainingRun, train_version
from training.gate import skill_of
from training.store import METADATA_FILE, ModelStore

pytestmark = pytest.mark.tf

NO_EVIDENCE = "no walk-forward backtest: no evidence of skill"
# Ten XNYS sessions ending on Christmas Eve 2024.
SESSIONS = ["2024-12-10", "2024-12-11", "2024-12-12", "2024-12-13", "2024-12-16"]
SESSIONS += ["2024-12-17", "2024-12-18", "2024-12-19", "2024-12-20", "2024-12-23"]


def christmas_eve_rows() -> list[dict[str, Any]]:
    """A window whose last row is 2024-12-24."""
    rows = [dict(zip(("open", "high", "low", "close", "volume"), values, strict=True)) for values in WINDOW_ROWS]
    for row, day in zip(rows, [*SESSIONS[1:], "2024-12-24"], strict=True):
        row["date"] = day
    return rows


@pytest.fixture(scope="module")
def skill_store(model_store: ModelStore, tmp_path_factory: pytest.TempPathFactory) -> ModelStore:
    """The shared store plus `crypto`, a horizon-2 model on the 24/7 calendar (no champion)."""
    root: Path = tmp_path_factory.mktemp("skill") / "models"
    shutil.copytree(model_store.root, root)
    store = ModelStore(root)
    source = {"name": SAMPLE.name, "path": str(SAMPLE)}
    train_version(
        TrainingRun("crypto", every_day(tiny_clean()), source, tiny_config(horizon=2, calendar="24/7")), store
    )
    refused_for_coverage(store, "tiny-h5", 1)
    return store


def refused_for_coverage(store: ModelStore, name: str, version: int) -> None:
    """Backtest evidence that beats naive and drift but whose band fails, and the gate's refusal in the ledger."""
    path = store.version_dir(name, version) / METADATA_FILE
    metadata = json.loads(path.read_text())
    test = {"statistic": -3.0, "p_value": 0.001, "windows": 500, "lag": 4, "standard_error": 0.0004}
    metadata["backtest"] = {
        **(metadata.get("backtest") or {}),
        "evidence": {
            "loss": "|log(actual / forecast)|",
            "vs_naive_step_1": test,
            "vs_naive_pooled": test,
            "vs_drift_pooled": test,
            "naive_vs_drift_pooled": {**test, "p_value": 0.01},
            "log_loss": {"model": 0.018, "naive": 0.02, "drift": 0.0201},
            "ratio_to_naive": 0.9,
            "coverage_90": {"band": "path", "within": False, "coverage": 0.8, "windows": 100, "failed": "path"},
        },
    }
    metadata["skill"] = skill_of(metadata, 0.05)
    path.write_text(json.dumps(metadata))
    store.record_attempt(name, {"version": version, "promoted": False, "challenger": False, "reason": "coverage"})


def _client(store: ModelStore, tmp_path_factory: pytest.TempPathFactory, **settings: object) -> Iterator[TestClient]:
    # The fake inference: what is tested here (skill, roles, dates, naive answers) is the serving layer's.
    with local_client(fake_app(store.root, tmp_path_factory.mktemp("var"), **settings)) as client:
        yield client


@pytest.fixture(scope="module")
def network_client(skill_store: ModelStore, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """The default setting: an unpromoted model serves its network, and says so."""
    yield from _client(skill_store, tmp_path_factory)


def test_an_answer_carries_the_versions_skill_and_the_champion_role(network_client: TestClient) -> None:
    response = network_client.post("/predict", json={"model": "tiny", "window": sample_rows()})
    assert response.status_code == 200, response.text
    body = PredictResponse.model_validate(response.json()).model_dump()
    assert body["skill"] == {
        "beats_naive": False,
        "beats_drift": False,
        "coverage_ok": None,
        "minimum_detectable_effect": None,
        # Made champion by the fixture's alias move, not by the gate, which never judged it.
        "promoted_by": "manual",
        "gate_verdict": "not judged",
        "ratio_to_naive": None,
        "ratio_to_naive_price": None,
        "p_value": None,
        "p_value_drift": None,
        "basis": NO_EVIDENCE,
        # The production refit: the served network has seen the dataset's last row.
        "trained_through": tiny_clean().frame["date"].iloc[-1].strftime("%Y-%m-%d"),
        "served_as": "champion",
        # The window ends on trained_through: its targets are after it, out of sample.
        "in_sample": False,
        # No live scores yet: the bands are as calibrated at training.
        "bands": {"basis": "calibrated", "live_scores": 0},
    }
    assert body["skill"]["trained_through"] == "2017-11-10"


def test_predict_v2_and_tf_serving_answers_for_one_window_carry_one_evidence_block(network_client: TestClient) -> None:
    for model in ("tiny", "tiny-h5"):
        predict = network_client.post("/predict", json={"model": model, "window": WINDOW_ROWS})
        assert predict.status_code == 200, predict.text
        block = evidence_block(predict.json()["skill"])
        v2 = network_client.post(
            f"/v2/models/{model}/infer",
            json={"inputs": [{"name": "window", "shape": [1, 10, 5], "datatype": "FP64", "data": WINDOW_ROWS}]},
        )
        assert v2.status_code == 200, v2.text
        parameters = v2.json()["parameters"]
        tf = network_client.post(f"/v1/models/{model}:predict", json={"instances": [WINDOW_ROWS]})
        assert tf.status_code == 200, tf.text
        assert tf.json()["evidence"] == block
        assert {key: parameters[key] for key in parameters if key.startswith("evidence_")} == {
            f"evidence_{key}": value for key, value in block.items() if value is not None
        }
    assert block == {
        "served_as": "unpromoted",
        "promoted_by": None,
        "gate_verdict": "refused",
        # Its DM tests beat naive and drift, but the gate refused it (the band): no beats_naive on its answers.
        "beats_naive": False,
        "beats_drift": True,
        "coverage_ok": False,
        # (t_0.95 + t_0.8) * standard error: at the service's level 0.05, as its p-value is read.
        "minimum_detectable_effect": pytest.approx((1.6479 + 0.8423) * 0.0004, rel=1e-3),
        "p_value": 0.001,
        "ratio_to_naive": 0.9,
    }
    # /models says the same of the version: the gate's verdict, and no beats_naive without it.
    listed = network_client.get("/models/tiny-h5").json()["versions"][0]["skill"]
    assert (listed["beats_naive"], listed["gate_verdict"], listed["beats_drift"]) == (False, "refused", True)


def test_pinned_unpromoted_and_batch_answers_say_how_the_version_was_chosen(network_client: TestClient) -> None:
    pinned = network_client.post("/predict", json={"model": "tiny", "version": 2, "window": sample_rows()})
    assert pinned.json()["skill"]["served_as"] == "pinned"
    arrays = [[row[column] for column in ("open", "high", "low", "close", "volume")] for row in sample_rows()]
    unpromoted = network_client.post("/predict", json={"model": "tiny-h5", "window": arrays})  # the arrays parser
    assert unpromoted.status_code == 200, unpromoted.text
    assert unpromoted.json()["skill"]["served_as"] == "unpromoted"
    assert unpromoted.json()["skill"]["beats_naive"] is False
    batch = network_client.post("/predict/batch", json={"model": "tiny", "windows": [sample_rows(), sample_rows()]})
    assert batch.status_code == 200, batch.text
    assert BatchPredictResponse.model_validate(batch.json()).skill.served_as == "champion"


def test_forecast_dates_are_the_calendars_next_sessions(network_client: TestClient) -> None:
    rows = christmas_eve_rows()
    stock = network_client.post("/predict", json={"model": "tiny-h5", "window": rows}).json()
    assert [step["date"] for step in stock["forecast"]] == [
        "2024-12-26",
        "2024-12-27",
        "2024-12-30",
        "2024-12-31",
        "2025-01-02",
    ]
    crypto = network_client.post("/predict", json={"model": "crypto", "window": rows}).json()
    assert [step["date"] for step in crypto["forecast"]] == ["2024-12-25", "2024-12-26"]
    assert network_client.get("/models/crypto").json()["versions"][0]["calendar"] == "24/7"


@pytest.fixture(scope="module")
def refusing_client(skill_store: ModelStore, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """unpromoted_default='refuse': an unpinned request for a model without a champion is a 409."""
    yield from _client(skill_store, tmp_path_factory, unpromoted_default="refuse")


def test_refuse_answers_409_for_an_unpromoted_model_unless_pinned(refusing_client: TestClient) -> None:
    refused = refusing_client.post("/predict", json={"model": "tiny-h5", "window": sample_rows()})
    assert refused.status_code == 409
    assert refused.json() == {
        "detail": "model 'tiny-h5' has no promoted version: no version has passed the promotion gate, and this "
        "service refuses unpinned requests for it (setting unpromoted_default); pin a version or alias to use "
        "one anyway"
    }
    pinned = refusing_client.post("/predict", json={"model": "tiny-h5", "version": 1, "window": sample_rows()})
    assert pinned.status_code == 200 and pinned.json()["skill"]["served_as"] == "pinned"
    champion = refusing_client.post("/predict", json={"model": "tiny", "window": sample_rows()})
    assert champion.status_code == 200 and champion.json()["skill"]["served_as"] == "champion"


def test_naive_answers_the_last_value_with_the_naive_bands(
    skill_store: ModelStore, tmp_path_factory: pytest.TempPathFactory
) -> None:
    for client in _client(skill_store, tmp_path_factory, unpromoted_default="naive"):
        rows = sample_rows()
        body = client.post("/predict", json={"model": "tiny-h5", "window": rows}).json()
        assert body["skill"]["served_as"] == "naive" and body["skill"]["ratio_to_naive"] == 1.0
        # Naive's own evidence, not the network's: it beat drift in the backtest (p 0.01), nothing else.
        assert evidence_block(body["skill"]) == {
            "served_as": "naive",
            "promoted_by": None,
            "gate_verdict": "not judged",
            "beats_naive": False,
            "beats_drift": True,
            "coverage_ok": None,
            "minimum_detectable_effect": None,
            "p_value": None,
            "ratio_to_naive": 1.0,
        }
        assert [step["close"] for step in body["forecast"]] == [rows[-1]["close"]] * 5
        for step in body["forecast"]:
            assert step["intervals"]["90"]["lower"] < rows[-1]["close"] < step["intervals"]["90"]["upper"]
