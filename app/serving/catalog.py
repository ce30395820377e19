"""What /models shows: versions, aliases, the served default and headline figures."""

from __future__ import annotations

from typing import Any

from app.serving.registry import ModelRegistry
from training.errors import BrokenVersionError
from training.store import CHAMPION, ModelStore, headline_mase


def _headline(metadata: dict[str, Any]) -> dict[str, Any]:
    model = metadata.get("metrics", {}).get("model", {})
    naive = metadata.get("metrics", {}).get("naive", {})
    backtest = (metadata.get("backtest") or {}).get("summary", {})
    coverage = (metadata.get("backtest") or {}).get("coverage", {})
    mase, basis = headline_mase(metadata)
    return {
        "architecture": metadata.get("architecture"),
        "window": metadata.get("window"),
        "horizon": metadata.get("horizon"),
        "features": metadata.get("features"),
        "label": metadata.get("label"),
        "created_at": metadata.get("created_at"),
        "data": {key: metadata.get("data", {}).get(key) for key in ("name", "start", "end", "rows")},
        "test": {
            "mae": model.get("mae"),
            "rmse": model.get("rmse"),
            "mape": model.get("mape"),
            "mase": model.get("mase"),
            "directional_accuracy": model.get("directional_accuracy"),
            "naive_mae": naive.get("mae"),
        },
        "backtest": {
            name: {key: figures.get(key) for key in ("mae", "mase", "directional_accuracy")}
            for name, figures in backtest.items()
        }
        or None,
        "backtest_coverage": {level: figures.get("coverage") for level, figures in coverage.items()} or None,
        "gate_mase": mase,
        "gate_basis": basis,
    }


def describe_version(store: ModelStore, name: str, version: int) -> dict[str, Any]:
    """Headline of one version, or its error if it is broken."""
    try:
        return {"version": version, **_headline(store.read_metadata(name, version))}
    except BrokenVersionError as error:
        return {"version": version, "error": str(error)}


def serving_figures(registry: ModelRegistry, name: str) -> dict[str, Any] | None:
    """How the default version is being served: engine and micro-batching so far."""
    state = registry.models.get(name)
    if state is None or state.served is None:
        return None
    served = state.served
    batcher = served.batcher
    return {
        "version": served.version,
        "engine": "xla" if getattr(served.model, "jit_compiled", False) else "graph",
        "max_batch_size": batcher.max_batch_size,
        "max_batch_wait_us": batcher.max_wait_us,
        "batches": batcher.batches_run,
        "windows": batcher.windows_run,
        "mean_batch_size": round(batcher.windows_run / batcher.batches_run, 2) if batcher.batches_run else None,
    }


def describe_model(store: ModelStore, registry: ModelRegistry, name: str) -> dict[str, Any]:
    """A model's versions, aliases and the version served by default."""
    aliases = store.aliases(name)
    state = registry.models.get(name)
    return {
        "name": name,
        "versions": [describe_version(store, name, version) for version in store.versions(name)],
        "aliases": aliases,
        "champion": aliases.get(CHAMPION),
        "default_version": state.served.version if state and state.served else None,
        "note": None
        if CHAMPION in aliases
        else "no version has passed the promotion gate yet; the one with the lowest MASE is served by default",
        "serving_error": state.error if state else None,
        "serving": serving_figures(registry, name),
    }
