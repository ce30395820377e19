"""GET /models/{name}/versions/{v}/report.png: served from the file drawn at training time, or drawn once."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from fastapi.testclient import TestClient

from tests.helpers import wait_until
from training.store import METADATA_FILE, REPORT_FILE, ModelStore

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_a_report_drawn_at_training_is_served_from_its_file(client: TestClient, model_store: ModelStore) -> None:
    drawn = model_store.version_dir("tiny-h5", 1) / REPORT_FILE
    # Not a chart: proof that the file is served as it is, not drawn again.
    drawn.write_bytes(PNG_SIGNATURE + b"drawn at training")
    try:
        response = client.get("/models/tiny-h5/versions/1/report.png")
        assert response.status_code == 200
        assert response.headers["content-type"] == "image/png"
        assert response.content == PNG_SIGNATURE + b"drawn at training"
    finally:
        drawn.unlink()


def test_a_version_without_a_report_gets_it_drawn_once_then_served(client: TestClient) -> None:
    settings = client.app.state.settings  # type: ignore[attr-defined]
    cached = settings.reports_dir / "tiny" / "2.png"
    assert not cached.exists()
    first = client.get("/models/tiny/versions/2/report.png")
    assert first.status_code == 200, first.text
    assert first.headers["content-type"] == "image/png"
    assert first.content[:8] == PNG_SIGNATURE and len(first.content) > 20_000
    assert cached.read_bytes() == first.content
    # From now on the file answers: a marker written into it comes back.
    cached.write_bytes(PNG_SIGNATURE + b"cached")
    assert client.get("/models/tiny/versions/2/report.png").content == PNG_SIGNATURE + b"cached"


def test_report_errors(client: TestClient) -> None:
    unknown_version = client.get("/models/tiny/versions/9/report.png")
    assert unknown_version.status_code == 404
    assert unknown_version.json() == {"detail": "model 'tiny' has no version 9; versions: [1, 2]"}
    unknown_model = client.get("/models/nope/report.png")
    assert unknown_model.status_code == 404


def test_a_report_that_cannot_be_drawn_says_why(
    empty_client: TestClient, model_store: ModelStore, tmp_path: Path
) -> None:
    """The child's error comes back with its status: here the version's training data is gone."""
    models = empty_client.app.state.settings.models_dir  # type: ignore[attr-defined]
    folder = models / "gone" / "1"
    shutil.copytree(model_store.version_dir("tiny", 1), folder)
    metadata = json.loads((folder / METADATA_FILE).read_text())
    missing = tmp_path / "deleted.csv"
    metadata.update(name="gone", data={**metadata["data"], "path": str(missing)})
    (folder / METADATA_FILE).write_text(json.dumps(metadata))
    wait_until(lambda: empty_client.get("/models/gone").status_code == 200, "the copied version to be listed")
    response = empty_client.get("/models/gone/versions/1/report.png")
    assert response.status_code == 404
    assert response.json() == {
        "detail": f"gone v1: its training data '{missing}' no longer exists; restore the file to draw the report"
    }
