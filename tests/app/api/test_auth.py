"""API keys in front of every route: 401 without a key, 403 without the scope, and every change attributed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.core.keys import create_key, revoke_key
from tests.fakes import fake_app
from tests.helpers import WINDOW, local_client, make_settings, wait_until
from tests.stub_training import use_stub_training
from training.store import ModelStore

ROW = [75.0, 76.0, 74.0, 75.5, 1.0e7]
ARRAYS_BODY = {"model": "tiny", "window": [[value * (1 + 0.001 * day) for value in ROW] for day in range(WINDOW)]}
CSV = "Date,Open,High,Low,Close,Volume\n2020-01-02,1,2,0.5,1.5,100\n"

# Every route that changes something, as a client would call it.
MUTATING = [
    ("POST", "/datasets", {"files": {"file": ("x.csv", CSV, "text/csv")}, "data": {"name": "x"}}),
    ("POST", "/datasets/msft/rows", {"json": {"rows": [{"Date": "2017-11-13", "Close": 84.0}]}}),
    ("POST", "/train", {"json": {"model": "x", "dataset": "msft"}}),
    ("DELETE", "/jobs/0123456789ab", {}),
    ("PUT", "/models/tiny/aliases/champion", {"json": {"version": 2}}),
]
MISSING = "missing API key: send the header 'Authorization: Bearer <key>'"


class Keys:
    """The keys file of the module's app and one key of each scope."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.admin = create_key(path, "ops", "admin")
        self.predict = create_key(path, "desk", "predict")


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    """An admin key `ops` and a predict key `desk`."""
    return Keys(tmp_path_factory.mktemp("keys") / "api_keys.json")


@pytest.fixture(scope="module")
def keyed(model_store: ModelStore, keys: Keys, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """The real app (lifespan included, fake inference, stub training) with API keys configured."""
    app = fake_app(model_store.root, tmp_path_factory.mktemp("var"), api_keys_file=keys.path)
    with local_client(app) as test_client:
        use_stub_training(test_client)
        yield test_client


def bearer(key: str) -> dict[str, str]:
    """The Authorization header for `key`."""
    return {"Authorization": f"Bearer {key}"}


@pytest.mark.parametrize(("method", "path", "body"), MUTATING, ids=[f"{m} {p}" for m, p, _ in MUTATING])
def test_mutating_routes_need_a_key(keyed: TestClient, method: str, path: str, body: dict[str, object]) -> None:
    response = keyed.request(method, path, **body)  # type: ignore[arg-type]
    assert response.status_code == 401
    assert response.json() == {"detail": MISSING}
    assert response.headers["www-authenticate"] == 'Bearer realm="stockcast"'


@pytest.mark.parametrize(("method", "path", "body"), MUTATING, ids=[f"{m} {p}" for m, p, _ in MUTATING])
def test_mutating_routes_refuse_a_predict_key(
    keyed: TestClient, keys: Keys, method: str, path: str, body: dict[str, object]
) -> None:
    response = keyed.request(method, path, headers=bearer(keys.predict), **body)  # type: ignore[arg-type]
    assert response.status_code == 403
    assert response.json() == {
        "detail": f"the key 'desk' has scope 'predict'; {method} {path} needs a key with scope 'admin'"
    }


def test_direct_answers_need_a_key_too(keyed: TestClient, keys: Keys) -> None:
    for headers in ({}, {"Authorization": "Basic b3BzOg=="}, bearer(keys.admin + "x")):
        response = keyed.post("/predict", json=ARRAYS_BODY, headers=headers)
        assert response.status_code == 401
    assert response.json() == {"detail": "invalid API key (unknown or revoked)"}
    assert response.headers["www-authenticate"] == 'Bearer realm="stockcast", error="invalid_token"'
    batch = keyed.post("/predict/batch", json={"model": "tiny", "windows": [ARRAYS_BODY["window"]]})
    assert batch.status_code == 401 and batch.json() == {"detail": MISSING}


def test_the_header_is_read_as_rfc_6750_says(keyed: TestClient, keys: Keys) -> None:
    """The scheme in any case and spaces around the key are accepted; a scheme alone or a non-ASCII key is refused."""
    for header in (f"bearer {keys.predict}", f"BEARER  {keys.predict} "):
        assert keyed.post("/predict", json=ARRAYS_BODY, headers={"Authorization": header}).status_code == 200
    for raw in (b"Bearer", b"Bearer ", b"Bearer \xe9" + keys.predict.encode()):
        response = keyed.post("/predict", json=ARRAYS_BODY, headers={"Authorization": raw})
        assert response.status_code == 401, raw


def test_a_predict_key_forecasts_and_reads(keyed: TestClient, keys: Keys) -> None:
    response = keyed.post("/predict", json=ARRAYS_BODY, headers=bearer(keys.predict))
    assert response.status_code == 200, response.text
    assert response.json()["model"] == "tiny"
    assert keyed.get("/models/tiny", headers=bearer(keys.predict)).status_code == 200
    assert keyed.get("/models/tiny").status_code == 401


def test_probes_and_docs_stay_open(keyed: TestClient) -> None:
    assert keyed.get("/health").json() == {"status": "ok"}
    assert keyed.get("/ready").status_code == 200
    schema = keyed.get("/openapi.json").json()
    assert schema["components"]["securitySchemes"]["apiKey"]["scheme"] == "bearer"
    assert schema["paths"]["/predict"]["post"]["security"] == [{"apiKey": []}]
    assert schema["paths"]["/health"]["get"]["security"] == []
    assert "Needs a key with scope `admin`." in schema["paths"]["/train"]["post"]["description"]


def test_an_alias_move_records_the_key(keyed: TestClient, keys: Keys, model_store: ModelStore) -> None:
    response = keyed.put(
        "/models/tiny/aliases/audited", json={"version": 2, "reason": "test"}, headers=bearer(keys.admin)
    )
    assert response.status_code == 200, response.text
    assert response.json()["change"]["by"] == "ops"
    assert model_store.alias_log("tiny")[-1]["by"] == "ops"


def test_a_revoked_key_is_refused_without_a_restart(keyed: TestClient, keys: Keys) -> None:
    temporary = create_key(keys.path, "temporary", "predict")
    wait_until(lambda: keyed.get("/models", headers=bearer(temporary)).status_code == 200, "the new key to work")
    revoke_key(keys.path, "temporary")
    wait_until(lambda: keyed.get("/models", headers=bearer(temporary)).status_code == 401, "the revoked key to fail")


def test_without_keys_off_loopback_nobody_gets_in(model_store: ModelStore, tmp_path: Path) -> None:
    from app.main import create_app

    # Not started (no lifespan): the gateway answers before anything the lifespan builds is needed.
    settings = make_settings(model_store.root, tmp_path, host="0.0.0.0")
    response = local_client(create_app(settings)).get("/models")
    assert response.status_code == 401
    assert response.json() == {
        "detail": "this service has no API keys and anonymous access is off; "
        "create one with `python -m app keys create NAME --scope admin`"
    }


def test_the_standard_protocols_need_a_key_and_hear_it_in_their_shape(keyed: TestClient, keys: Keys) -> None:
    infer = {"inputs": [{"name": "window", "shape": [1, WINDOW, 5], "datatype": "FP64", "data": ARRAYS_BODY["window"]}]}
    for path in ("/v2/models/tiny/infer", "/v1/models/tiny:predict"):
        response = keyed.post(path, json=infer)
        assert response.status_code == 401
        assert response.json() == {"error": MISSING}
    assert keyed.get("/v2/health/live").status_code == 200
    assert keyed.post("/v2/models/tiny/infer", json=infer, headers=bearer(keys.predict)).status_code == 200
