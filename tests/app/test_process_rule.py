"""The API process never imports TensorFlow or Keras, whatever route is called (docs/design.md, "Serving path").

A real uvicorn process over real tiny versions: every route is called, the
version report included (for a version trained before reports were drawn at
training time, so it is drawn on request, in a child process), and when the
server has stopped it lists the modules it held.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.helpers import WINDOW_ROWS, ServiceProcess, sample_rows, wait_job
from training.store import REPORT_FILE, ModelStore

pytestmark = [pytest.mark.e2e, pytest.mark.tf]

FORBIDDEN = ("tensorflow", "keras", "tf_keras", "jax", "torch")
CSV = "Date,Open,High,Low,Close,Volume\n" + "".join(
    f"2020-01-{day:02d},{100 + day},{101 + day},{99 + day},{100.5 + day},{1000 * day}\n" for day in range(2, 30)
)
APPENDED = {"Date": "2020-01-30", "Open": 130, "High": 131, "Low": 129, "Close": 130.5, "Volume": 30000}


def test_no_tensorflow_in_the_api_process_after_every_route(model_store: ModelStore, tmp_path: Path) -> None:
    models = tmp_path / "models"
    shutil.copytree(model_store.root, models)
    assert not (models / "tiny" / "1" / REPORT_FILE).exists()
    server = ServiceProcess(models, tmp_path, modules_file=tmp_path / "modules.txt")
    server.start()
    try:
        rows = sample_rows()
        tensor = {
            "name": "window",
            "shape": [1, 10, 5],
            "datatype": "FP32",
            "data": [value for row in WINDOW_ROWS for value in row],
        }
        calls = [
            ("GET", "/health", {}, 200),
            ("GET", "/ready", {}, 200),
            ("GET", "/openapi.json", {}, 200),
            ("GET", "/models", {}, 200),
            ("GET", "/models/tiny", {}, 200),
            ("GET", "/models/tiny/versions/1", {}, 200),
            ("GET", "/models/tiny/versions/1/report.png", {}, 200),
            ("GET", "/models/tiny/versions/1/report.png", {}, 200),
            ("GET", "/models/tiny/aliases", {}, 200),
            ("GET", "/models/tiny/monitoring", {}, 200),
            ("GET", "/models/tiny/monitoring.png", {}, 200),
            ("PUT", "/models/tiny/aliases/staging", {"json": {"version": 2}}, 200),
            ("PUT", "/models/tiny/schedule", {"json": {"dataset": "msft", "enabled": False}}, 200),
            ("GET", "/models/tiny/schedule", {}, 200),
            ("DELETE", "/models/tiny/schedule", {}, 200),
            ("POST", "/predict", {"json": {"model": "tiny", "window": WINDOW_ROWS}}, 200),
            ("POST", "/predict", {"json": {"model": "tiny", "window": rows}}, 200),
            ("POST", "/predict", {"json": {"model": "tiny", "version": 2, "window": rows}}, 200),
            ("POST", "/predict/batch", {"json": {"model": "tiny", "windows": [rows, WINDOW_ROWS]}}, 200),
            ("GET", "/datasets", {}, 200),
            ("GET", "/datasets/msft", {}, 200),
            ("POST", "/datasets", {"files": {"file": ("a.csv", CSV)}, "data": {"name": "jan"}}, 201),
            ("POST", "/datasets/jan/rows", {"json": {"rows": [APPENDED]}}, 200),
            ("GET", "/jobs", {}, 200),
            ("GET", "/metrics", {}, 200),
            # The standard protocols.
            ("GET", "/v2/health/ready", {}, 200),
            ("GET", "/v2/models/tiny", {}, 200),
            ("POST", "/v2/models/tiny/infer", {"json": {"inputs": [tensor]}}, 200),
            ("GET", "/v1/models/tiny", {}, 200),
            ("GET", "/v1/models/tiny/metadata", {}, 200),
            ("POST", "/v1/models/tiny:predict", {"json": {"instances": [{"window": WINDOW_ROWS}]}}, 200),
        ]
        for method, path, arguments, status in calls:
            response = server.request(method, path, **arguments)
            assert response.status_code == status, (method, path, response.text)
        assert server.get("/models/tiny/versions/1/report.png").content[:8] == b"\x89PNG\r\n\x1a\n"
        accepted = server.post("/train", json={"model": "m", "dataset": "jan", "window": 5, "epochs": 1})
        assert accepted.status_code == 202, accepted.text
        job_id = accepted.json()["job_id"]
        assert server.request("DELETE", f"/jobs/{job_id}").status_code == 200
        wait_job(server, job_id, ("cancelled",))
    finally:
        server.stop()
    modules = (tmp_path / "modules.txt").read_text().split()
    assert "app.main" in modules and "uvicorn" in modules  # the list is the server's
    assert [module for module in modules if module.split(".")[0] in FORBIDDEN] == []
