"""Which version serves when a request names none."""

from __future__ import annotations

import json
from pathlib import Path

from training.store import CHAMPION, METADATA_FILE, MODEL_FILE, REQUIRED_METADATA, ModelStore


def save_with_mase(store: ModelStore, mase: float | None) -> int:
    """A version whose metadata is complete and carries the given test MASE."""
    metadata = {key: {} for key in REQUIRED_METADATA}
    metadata["metrics"] = {"model": {"mase": mase}}

    def write(folder: Path) -> None:
        (folder / MODEL_FILE).write_bytes(b"weights")

    return store.save_version("demo", write, metadata)


def test_without_a_champion_the_lowest_mase_serves_not_the_newest(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    save_with_mase(store, 1.01)
    save_with_mase(store, 1.03)  # newer but worse: must not take over silently
    assert store.default_version("demo") == 1
    save_with_mase(store, 1.01)  # as good as v1: the newer one wins the tie
    assert store.default_version("demo") == 3


def test_the_champion_serves_whatever_the_figures(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    save_with_mase(store, 0.99)
    save_with_mase(store, 1.2)
    store.set_alias("demo", CHAMPION, 2, reason="operator's choice")
    assert store.default_version("demo") == 2 == store.resolve("demo")


def test_broken_or_unscored_versions_fall_back_to_the_newest(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    save_with_mase(store, None)
    save_with_mase(store, None)
    assert store.default_version("demo") == 2
    (tmp_path / "demo" / "2" / METADATA_FILE).write_text(json.dumps({"broken": True}))
    assert store.default_version("demo") == 2  # unreadable metadata is not scored; newest stands
    assert store.default_version("nothing") is None
