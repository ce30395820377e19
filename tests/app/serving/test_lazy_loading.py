"""With the setting `preload` false, a model's default version loads on its first request, once."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.fakes import fake_app_on
from tests.helpers import WINDOW_ROWS, local_client, make_settings
from training.store import ModelStore


def test_a_model_loads_on_its_first_request_and_the_service_is_ready_before(
    model_store: ModelStore, tmp_path: Path
) -> None:
    settings = make_settings(model_store.root, tmp_path / "var", preload=False)
    with local_client(fake_app_on(settings)) as client:
        registry = client.app.state.registry  # type: ignore[attr-defined]
        ready = client.get("/ready")
        assert ready.status_code == 200, ready.text
        assert ready.json()["models"] == {"tiny": None, "tiny-h5": None} and registry.inference.loads == []
        first = client.post("/predict", json={"model": "tiny", "window": WINDOW_ROWS})
        assert first.status_code == 200 and first.json()["version"] == 1
        again = client.post("/predict", json={"model": "tiny", "window": WINDOW_ROWS})
        assert again.status_code == 200 and registry.inference.loads == [("tiny", 1)]
        assert client.get("/ready").json()["models"] == {"tiny": 1, "tiny-h5": None}

        async def first_requests_together() -> None:
            await asyncio.gather(*(registry.get("tiny-h5") for _ in range(5)))

        client.portal.call(first_requests_together)  # type: ignore[union-attr]
        assert registry.inference.loads == [("tiny", 1), ("tiny-h5", 1)]
