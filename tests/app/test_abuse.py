"""Faults and abuse, kept in the suite: what a hostile client or a broken disk does to the service.

Each test names the exact status and message the service must answer with.
The largest-batch test runs a real `python -m app` process, so it uses the
event loop production uses (uvicorn picks uvloop): the bug it guards against
only showed under uvloop, where the socket to the inference process is
non-blocking.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import select
import shutil
import signal
import socket
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.api.upload_limit import UPLOAD_ALLOWANCE_BYTES
from app.serving.registry import ModelRegistry, ServedVersion
from tests.fakes import fake_app_on
from tests.helpers import (
    SAMPLE,
    WINDOW_ROWS,
    ServiceProcess,
    local_client,
    make_settings,
    store_with_a_third_version,
    tiny_clean,
    tiny_config,
    wait_job,
    wait_until,
)
from training.fitting import TrainingRun, train_version
from training.store import ALIASES_FILE, MODEL_FILE, ModelStore

pytestmark = pytest.mark.tf

# Production's window length: 1,024 windows of 40 rows are about 0.8 MB once
# scaled, four times the socket buffer that the old protocol overran.
WIDE_WINDOW = 40
MAX_BATCH_WINDOWS = 1024
UPLOAD_LIMIT = 1024 * 1024


@pytest.fixture(scope="module")
def wide_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    """`python -m app` (uvloop) serving one tiny model with production's window length."""
    home = tmp_path_factory.mktemp("wide")
    source = {"name": SAMPLE.name, "path": str(SAMPLE)}
    run = TrainingRun("wide", tiny_clean(), source, tiny_config(window=WIDE_WINDOW))
    train_version(run, ModelStore(home / "models"))
    server = ServiceProcess(
        home / "models",
        home,
        command=[sys.executable, "-m", "app"],
        STOCKCAST_MAX_BATCH_WINDOWS=str(MAX_BATCH_WINDOWS),
        STOCKCAST_MAX_UPLOAD_BYTES=str(UPLOAD_LIMIT),
    )
    server.start()
    yield server
    server.stop()


def wide_windows(count: int) -> list[list[list[float]]]:
    """`count` windows of real prices in the arrays form (repeated: only the size matters here)."""
    values = tiny_clean().frame[["open", "high", "low", "close", "volume"]].to_numpy(dtype=np.float64)
    one = values[-WIDE_WINDOW:].tolist()
    return [one] * count


@pytest.mark.e2e
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


@pytest.mark.e2e
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
    with local_client(create_app(settings)) as client:
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


class RegistryCounts:
    """Counts every registry's loads per (name, version) and its store refreshes, by wrapping its methods."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.loads: Counter[tuple[str, int]] = Counter()
        self.refreshes = 0
        load, refresh = ModelRegistry._load, ModelRegistry.refresh

        async def counted_load(registry: ModelRegistry, name: str, version: int) -> ServedVersion:
            self.loads[(name, version)] += 1
            return await load(registry, name, version)

        async def counted_refresh(registry: ModelRegistry, name: str | None = None) -> None:
            try:
                await refresh(registry, name)
            finally:
                self.refreshes += 1

        monkeypatch.setattr(ModelRegistry, "_load", counted_load)
        monkeypatch.setattr(ModelRegistry, "refresh", counted_refresh)


def test_a_corrupt_newest_version_is_not_retried_and_the_served_one_not_reloaded(
    model_store: ModelStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The registry's retries are the point: the fake backend refuses the tampered file as the real one does
    # (tests/app/inference/test_client.py sends a broken version through the real process).
    # tiny v3: a copy of v2 whose network file no longer matches its hash, made champion.
    root = store_with_a_third_version(model_store.root, tmp_path / "models")
    with open(root / "tiny" / "3" / MODEL_FILE, "ab") as handle:
        handle.write(b"corrupted")
    (root / "tiny" / ALIASES_FILE).write_text(json.dumps({"champion": 3}))
    settings = make_settings(root, tmp_path / "var", refresh_seconds=0.1)
    counts = RegistryCounts(monkeypatch)
    with local_client(fake_app_on(settings)) as client:
        start = counts.refreshes
        wait_until(lambda: counts.refreshes >= start + 10, "ten refreshes")
        attempts = dict(counts.loads)
        served = client.post("/predict", json={"model": "tiny", "window": WINDOW_ROWS})
        pinned = client.post("/predict", json={"model": "tiny", "version": 3, "window": WINDOW_ROWS})
        problem = client.get("/ready").json()["problems"]["tiny"]
        # New files: the version is tried once more (and fails once more).
        with open(root / "tiny" / "3" / MODEL_FILE, "ab") as handle:
            handle.write(b"again")
        start = counts.refreshes
        wait_until(lambda: counts.refreshes >= start + 3, "three more refreshes")
        retried = dict(counts.loads)
    assert attempts[("tiny", 3)] == 1 and attempts[("tiny", 2)] == 1
    assert served.status_code == 200 and served.json()["version"] == 2
    assert pinned.status_code == 409
    assert pinned.json() == {
        "detail": "model 'tiny' v3 not served: tiny v3: model.keras does not match its sha256 in metadata"
    }
    assert problem == "v3 not served: tiny v3: model.keras does not match its sha256 in metadata"
    assert retried[("tiny", 3)] == 2 and retried[("tiny", 2)] == 1


@pytest.mark.parametrize(
    ("value", "column", "detail"),
    [
        (1e300, 0, "window[9].open: 1e+300 is out of the supported range [1e-06, 1e+12]"),
        (1e-300, 3, "window[9].close: 1e-300 is out of the supported range [1e-06, 1e+12]"),
        (1e300, 4, "window[9].volume: 1e+300 is out of the supported range [0, 1e+15]"),
        (-1.0, 3, "window[9].close: prices must be positive, got -1.0"),
    ],
)
def test_values_that_would_overflow_are_refused_by_name(
    half_broken_client: TestClient, value: float, column: int, detail: str
) -> None:
    window = [list(row) for row in WINDOW_ROWS]
    window[9][column] = value
    for route, body in (
        ("/predict", {"model": "tiny", "window": window}),
        ("/predict/batch", {"model": "tiny", "windows": [window]}),
    ):
        answer = half_broken_client.post(route, json=body)
        expected = detail if route == "/predict" else detail.replace("window[9]", "windows[0][9]")
        assert (answer.status_code, answer.json()["detail"]) == (422, expected), route


def test_rows_out_of_range_and_dates_past_the_calendar_are_refused(half_broken_client: TestClient) -> None:
    rows = [
        {"date": f"2020-01-{day + 1:02d}", **dict(zip(("open", "high", "low", "close", "volume"), row, strict=True))}
        for day, row in enumerate(WINDOW_ROWS)
    ]
    huge = [dict(row) for row in rows]
    huge[2]["high"] = 1e300
    answer = half_broken_client.post("/predict", json={"model": "tiny", "window": huge})
    assert (answer.status_code, answer.json()["detail"]) == (
        422,
        "window[2].high: 1e+300 is out of the supported range [1e-06, 1e+12]",
    )
    late = [{**row, "date": f"9999-12-{day + 20:02d}"} for day, row in enumerate(rows)]
    answer = half_broken_client.post("/predict", json={"model": "tiny", "window": late})
    assert (answer.status_code, answer.json()["detail"]) == (
        422,
        "window[9].date: 9999-12-29 is outside the supported range 1900-01-01 to 2199-12-31",
    )
    fine = half_broken_client.post("/predict", json={"model": "tiny", "window": rows})
    assert fine.status_code == 200
    assert all(isinstance(step["close"], float) for step in fine.json()["forecast"])


def test_tensorflow_s_temporary_files_stay_in_the_data_folder(model_store: ModelStore, tmp_path: Path) -> None:
    from app.main import create_app

    # TensorFlow on purpose: the tiny versions have checked ONNX exports, which never run autograph.
    settings = make_settings(model_store.root, tmp_path / "var", inference_engine="tensorflow")
    private = settings.data_dir / "tmp" / "inference"
    with local_client(create_app(settings)) as client:
        assert client.post("/predict", json={"model": "tiny", "window": WINDOW_ROWS}).status_code == 200
        generated = sorted(path.name for path in private.glob("__autograph_generated_file*.py"))
    # Autograph did write its modules, and wrote them here, not in /tmp.
    assert generated
    # The process removes them when it stops (it leaves with os._exit, so atexit never would).
    assert not private.exists()


def upload_head(server: ServiceProcess, framing: bytes) -> bytes:
    """The head of a multipart POST /datasets whose file part never ends."""
    return (
        b"POST /datasets HTTP/1.1\r\nhost: 127.0.0.1\r\n"
        b"content-type: multipart/form-data; boundary=xyz\r\n" + framing + b"\r\n"
    )


FILE_PART = b'--xyz\r\ncontent-disposition: form-data; name="file"; filename="big.csv"\r\n\r\nDate,Open\n'


def send_until_answered(sock: socket.socket, chunk: bytes, most: int) -> tuple[int, bytes]:
    """Send `chunk` again and again until the server answers (or `most` bytes went); bytes sent, the answer."""
    sent = 0
    sock.setblocking(False)
    answer = b""
    while sent < most:
        readable, writable, _ = select.select([sock], [sock], [], 5)
        if readable:
            try:
                answer += sock.recv(65536)
            except ConnectionError:
                break
            if b"\r\n\r\n" in answer:
                break
        elif writable:
            try:
                sent += sock.send(chunk)
            except (BlockingIOError, InterruptedError):
                continue
            except ConnectionError:
                break
    sock.setblocking(True)
    sock.settimeout(10)
    with contextlib.suppress(OSError):
        while not answer.endswith(b"}"):
            more = sock.recv(65536)
            if not more:
                break
            answer += more
    return sent, answer


@pytest.mark.parametrize("framing", ["announced", "chunked"])
@pytest.mark.e2e
def test_an_oversize_upload_is_refused_while_it_streams(wide_server: ServiceProcess, framing: str) -> None:
    datasets = wide_server.home / "var" / "datasets"
    before = sorted(datasets.iterdir()) if datasets.exists() else []
    most = 64 * UPLOAD_LIMIT  # what a client that is never stopped would send
    with socket.create_connection(("127.0.0.1", wide_server.port)) as sock:
        if framing == "announced":
            sock.sendall(upload_head(wide_server, b"content-length: %d\r\n" % most) + FILE_PART)
            sent, answer = send_until_answered(sock, b"1" * 65536, most)
        else:
            sock.sendall(upload_head(wide_server, b"transfer-encoding: chunked\r\n"))
            sock.sendall(b"%x\r\n%s\r\n" % (len(FILE_PART), FILE_PART))
            sent, answer = send_until_answered(sock, b"10000\r\n" + b"1" * 65536 + b"\r\n", most)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413 "), answer[:200]
    if framing == "announced":
        # The gateway refuses an announced body over the whole request's limit before reading any of it.
        limit = UPLOAD_LIMIT + UPLOAD_ALLOWANCE_BYTES
        assert json.loads(body) == {"detail": f"request body is larger than the {limit} byte limit for /datasets"}
    else:
        # Unannounced, the upload limit counts the file's own bytes as they stream in.
        assert json.loads(body) == {"detail": f"file is larger than the {UPLOAD_LIMIT} byte limit"}
    # Refused within a few socket buffers of the limit, not after the whole upload.
    assert sent < 8 * UPLOAD_LIMIT
    assert (sorted(datasets.iterdir()) if datasets.exists() else []) == before
    spool = wide_server.home / "var" / "tmp" / "api"
    assert spool.is_dir() and not any(spool.iterdir())


def test_a_store_that_cannot_be_written_fails_the_job_before_it_trains(half_broken_client: TestClient) -> None:
    settings = half_broken_client.app.state.settings  # type: ignore[attr-defined]
    # Root ignores read-only modes, so the store's folder for this model is a file: mkdir fails the same way.
    (settings.models_dir / "blocked").write_text("not a folder")
    accepted = half_broken_client.post(
        "/train", json={"model": "blocked", "dataset": "msft", "window": 10, "units": 4, "epochs": 1}
    )
    assert accepted.status_code == 202, accepted.text
    job = wait_job(half_broken_client, accepted.json()["job_id"], ("failed", "succeeded"))
    assert job["status"] == "failed"
    assert job["error"] == "the model store cannot be written (File exists); nothing was trained"
    assert "epoch" not in (job.get("progress") or {})


def test_version_metadata_names_the_dataset_by_name_and_hash_not_by_path(half_broken_client: TestClient) -> None:
    answer = half_broken_client.get("/models/tiny/versions/1")
    assert answer.status_code == 200
    assert "path" not in answer.json()["data"]
    assert answer.json()["data"]["name"] == SAMPLE.name
    assert str(SAMPLE.parent) not in answer.text and "/tmp" not in answer.text


def test_a_data_folder_that_cannot_be_written_answers_503_without_paths(half_broken_client: TestClient) -> None:
    datasets = half_broken_client.app.state.settings.datasets_dir  # type: ignore[attr-defined]
    moved = datasets.with_name("datasets-moved")
    datasets.rename(moved)
    datasets.write_text("not a folder")
    try:
        answer = half_broken_client.post(
            "/datasets", data={"name": "fresh"}, files={"file": ("f.csv", SAMPLE.read_bytes(), "text/csv")}
        )
    finally:
        datasets.unlink()
        moved.rename(datasets)
    assert answer.status_code == 503
    assert answer.json() == {"detail": "the service cannot read or write its files: File exists; retry later"}
