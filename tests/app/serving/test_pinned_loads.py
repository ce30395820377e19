"""Pinned requests may cause only so many version loads a minute: a key cycling versions gets 429."""

from __future__ import annotations

from pathlib import Path

from tests.fakes import fake_app
from tests.helpers import WINDOW_ROWS, local_client, store_with_a_third_version
from training.store import ModelStore


def test_a_key_cycling_pinned_versions_is_limited_and_cached_ones_still_answer(
    model_store: ModelStore, tmp_path: Path
) -> None:
    # Finding 13: a read-scope key cycling pinned versions kept the inference process loading (others' p50 5 -> 89 ms).
    root = store_with_a_third_version(model_store.root, tmp_path / "models")
    app = fake_app(root, tmp_path / "var", pinned_loads_per_minute=1, pinned_cache_size=1)
    with local_client(app) as client:

        def pinned(version: int) -> tuple[int, dict[str, object], str | None]:
            answer = client.post("/predict", json={"model": "tiny", "version": version, "window": WINDOW_ROWS})
            return answer.status_code, answer.json(), answer.headers.get("retry-after")

        status, body, _ = pinned(2)
        assert status == 200 and body["version"] == 2
        status, body, retry_after = pinned(3)
        assert status == 429
        assert body == {
            "detail": "1 pinned versions were loaded in the last minute, the most allowed"
            " (STOCKCAST_PINNED_LOADS_PER_MINUTE); the default version and the 1 most recently pinned ones"
            " answer at once"
        }
        assert retry_after is not None and 1 <= int(retry_after) <= 60
        assert pinned(2)[0] == 200  # loaded already: no load, no limit
        default = client.post("/predict", json={"model": "tiny", "window": WINDOW_ROWS})
        assert default.status_code == 200 and default.json()["version"] == 1
