"""Faults and abuse, kept in the suite: what a hostile client or a broken disk does to the service.

Each test names the exact status and message the service must answer with.
The largest-batch test runs a real `python -m app` process, so it uses the
event loop production uses (uvicorn picks uvloop): the bug it guards against
only showed under uvloop, where the socket to the inference process is
non-blocking.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import sys
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from tests.helpers import SAMPLE, ServiceProcess, make_settings, tiny_clean, tiny_config, wait_until
from training.pipeline import train_version
from training.store import ModelStore

# Production's window length: 1,024 windows of 40 rows are about 0.8 MB once
# scaled, four times the socket buffer that the old protocol overran.
WIDE_WINDOW = 40
MAX_BATCH_WINDOWS = 1024


@pytest.fixture(scope="module")
def wide_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    """`python -m app` (uvloop) serving one tiny model with production's window length."""
    home = tmp_path_factory.mktemp("wide")
    train_version(
        tiny_clean(),
        tiny_config(window=WIDE_WINDOW),
        ModelStore(home / "models"),
        "wide",
        {"name": SAMPLE.name, "path": str(SAMPLE)},
    )
    server = ServiceProcess(
        home / "models",
        home,
        command=[sys.executable, "-m", "app"],
        STOCKCAST_MAX_BATCH_WINDOWS=str(MAX_BATCH_WINDOWS),
    )
    server.start()
    yield server
    server.stop()


def wide_windows(count: int) -> list[list[list[float]]]:
    """`count` windows of real prices in the arrays form (repeated: only the size matters here)."""
    values = tiny_clean().frame[["open", "high", "low", "close", "volume"]].to_numpy(dtype=np.float64)
    one = values[-WIDE_WINDOW:].tolist()
    return [one] * count


def test_the_largest_batch_ten_times_idle_and_under_load_then_a_predict(wide_server: ServiceProcess) -> None:
    batch = {"model": "wide", "windows": wide_windows(MAX_BATCH_WINDOWS)}
    single = {"model": "wide", "window": wide_windows(1)[0]}

    async def scenario() -> tuple[list[int], list[int], list[int], int]:
        async with httpx.AsyncClient(base_url=wide_server.url, timeout=120) as client:

            async def batches() -> list[int]:
                statuses = []
                for _ in range(10):
                    answer = await client.post("/predict/batch", json=batch)
                    statuses.append(answer.status_code)
                    if answer.status_code == 200:
                        assert len(answer.json()["forecasts"]) == MAX_BATCH_WINDOWS
                return statuses

            idle = await batches()
            load: list[int] = []
            done = asyncio.Event()

            async def hammer() -> None:
                while not done.is_set():
                    load.append((await client.post("/predict", json=single)).status_code)

            hammers = [asyncio.create_task(hammer()) for _ in range(8)]
            try:
                busy = await batches()
            finally:
                done.set()
                await asyncio.gather(*hammers)
            after = await client.post("/predict", json=single)
            return idle, busy, load, after.status_code

    idle, busy, load, after = asyncio.run(scenario())
    assert idle == [200] * 10
    assert busy == [200] * 10
    assert load and set(load) == {200}
    assert after == 200
    log = wide_server.log()
    assert "unanswered past its deadline" not in log
    assert "inference process stopped" not in log
    ready = wide_server.get("/ready")
    assert ready.status_code == 200 and ready.json()["inference_process"]["restarts"] == 0


def test_a_batch_over_the_limit_is_refused_with_the_limit(wide_server: ServiceProcess) -> None:
    answer = wide_server.post("/predict/batch", json={"model": "wide", "windows": wide_windows(MAX_BATCH_WINDOWS + 1)})
    assert answer.status_code == 422
    assert answer.json() == {"detail": f"windows: at most {MAX_BATCH_WINDOWS} windows per request, got 1025"}


@pytest.fixture(scope="module")
def half_broken_client(model_store: ModelStore, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """The fixture models plus `broken`, whose only version's network file is garbage."""
    from app.main import create_app

    home = tmp_path_factory.mktemp("half-broken")
    root = home / "models"
    shutil.copytree(model_store.root, root)
    shutil.copytree(root / "tiny-h5", root / "broken")
    (root / "broken" / "1" / "model.keras").write_bytes(b"not a keras file")
    settings = make_settings(root, home / "var", ready_timeout_seconds=1.0)
    with TestClient(create_app(settings)) as client:
        yield client


def test_one_broken_model_leaves_the_service_ready_and_is_named(half_broken_client: TestClient) -> None:
    ready = half_broken_client.get("/ready")
    assert ready.status_code == 200, ready.text
    assert ready.json()["not_loaded"] == ["broken"]
    assert ready.json()["problems"]["broken"].startswith("v1 not served: ")
    broken = half_broken_client.get("/ready", params={"model": "broken"})
    assert broken.status_code == 503
    assert broken.json()["detail"].startswith("model 'broken' is not loaded: v1 not served: broken v1: ")
    assert half_broken_client.get("/ready", params={"model": "tiny"}).status_code == 200
    unknown = half_broken_client.get("/ready", params={"model": "nope"})
    assert unknown.status_code == 404
    assert unknown.json() == {"detail": "unknown model 'nope'; models: ['broken', 'tiny', 'tiny-h5']"}


def test_a_stuck_inference_process_makes_the_service_not_ready(half_broken_client: TestClient) -> None:
    pid = half_broken_client.get("/ready").json()["inference_process"]["pid"]
    os.kill(pid, signal.SIGSTOP)  # alive, but answers nothing
    try:
        stuck = half_broken_client.get("/ready")
        stuck_model = half_broken_client.get("/ready", params={"model": "tiny"})
    finally:
        os.kill(pid, signal.SIGCONT)
    assert stuck.status_code == 503
    assert stuck.json()["detail"] == "the inference process is not answering (no reply within 1 s)"
    assert stuck_model.status_code == 503
    assert stuck_model.json()["detail"] == "the inference process is not answering (no reply within 1 s)"
    wait_until(lambda: half_broken_client.get("/ready").status_code == 200, "the process to answer again")


# (as sent in the URL, as the service decodes it)
HOSTILE_NAMES = [
    ("%2e%2e", ".."),
    ("%2E", "."),
    ("tiny%0A", "tiny\n"),
    ("tiny%00", "tiny\x00"),
    ("a" * 300, "a" * 300),
    ("..%2F..%2Ftmp", "../../tmp"),
]
NAME_RULE = "use 1-64 letters, digits, '_', '-' or '.', starting with a letter or digit"
MODEL_NAME_FIELD = "body.model: String should match pattern '^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$'"
DATASET_NAME_FIELD = MODEL_NAME_FIELD.replace("model", "dataset")


def shown_name(name: str) -> str:
    """How an error message quotes a hostile name: repr, cut at 40 characters."""
    text = repr(name)
    return text if len(text) <= 40 else f"{text[:40]}... ({len(name)} characters)"


@pytest.mark.parametrize(("sent", "name"), HOSTILE_NAMES)
def test_hostile_names_on_every_route_are_refused_and_stay_in_the_store(
    half_broken_client: TestClient, sent: str, name: str
) -> None:
    client = half_broken_client
    home = client.app.state.settings.models_dir.parent  # type: ignore[attr-defined]
    before = sorted(str(path) for path in home.rglob("*") if path.is_file())
    if "/" in name:
        # A separator splits the path: no route has a name with one, so nothing is looked up.
        model_answer = dataset_answer = job_answer = alias_answer = (404, "Not Found")
    else:
        model_answer = (422, f"invalid model name {shown_name(name)}: {NAME_RULE}")
        dataset_answer = (422, f"invalid dataset name {shown_name(name)}: {NAME_RULE}")
        job_answer = (422, f"invalid job id {shown_name(name)}: use 1-64 letters, digits, '_' or '-'")
        alias_answer = (422, f"invalid alias {shown_name(name)}: use 1-32 lower-case letters, digits, '_' or '-'")
    by_path = [
        ("GET", f"/models/{sent}", {}, model_answer),
        ("GET", f"/models/{sent}/versions/1", {}, model_answer),
        ("GET", f"/models/{sent}/versions/1/report.png", {}, model_answer),
        ("GET", f"/models/{sent}/aliases", {}, model_answer),
        ("PUT", f"/models/{sent}/aliases/champion", {"json": {"version": 1}}, model_answer),
        ("PUT", f"/models/tiny/aliases/{sent}", {"json": {"version": 1}}, alias_answer),
        ("GET", f"/datasets/{sent}", {}, dataset_answer),
        ("GET", f"/jobs/{sent}", {}, job_answer),
        ("DELETE", f"/jobs/{sent}", {}, job_answer),
    ]
    window = [[1.0, 1.1, 0.9, 1.0, 1000.0]] * 10
    by_body = [
        ("POST", "/predict", {"json": {"model": name, "window": window}}, (422, MODEL_NAME_FIELD)),
        ("POST", "/predict/batch", {"json": {"model": name, "windows": [window]}}, (422, MODEL_NAME_FIELD)),
        ("POST", "/train", {"json": {"model": name, "dataset": "tiny"}}, (422, MODEL_NAME_FIELD)),
        ("POST", "/train", {"json": {"model": "x", "dataset": name}}, (422, DATASET_NAME_FIELD)),
        (
            "POST",
            "/datasets",
            {"data": {"name": name}, "files": {"file": ("x.csv", b"Date,Open\n")}},
            (422, f"invalid dataset name {shown_name(name)}: {NAME_RULE}"),
        ),
        ("GET", "/ready", {"params": {"model": name}}, (422, f"invalid model name {shown_name(name)}: {NAME_RULE}")),
    ]
    for method, url, options, (status, detail) in by_path + by_body:
        answer = client.request(method, url, **options)
        assert (answer.status_code, answer.json()["detail"]) == (status, detail), (method, url)
    after = sorted(str(path) for path in home.rglob("*") if path.is_file())
    assert after == before
    assert sorted(path.name for path in home.iterdir()) == ["models", "var"]
