"""The model store the settings ask for: the folder, or object storage cached in the folder.

Every process of the service (API, queue worker, training child, commands)
opens its store here, so all of them agree on where versions live.
See docs/store.md.
"""

from __future__ import annotations

from app.core.config import Settings
from training.remote_store import open_model_store
from training.store import ModelStore


def model_store(settings: Settings) -> ModelStore:
    """The folder store at `models_dir`, or with `store_url` the object store with `models_dir` as its cache."""
    return open_model_store(settings.models_dir, settings.store_url, settings.store_cache_versions)
