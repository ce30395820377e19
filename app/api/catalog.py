"""What /models shows: versions, aliases, the served default and headline figures.

Version metadata is read through `VersionPublic` (typed, and checked: a
version whose metadata does not fit is listed as broken, with the reason),
and every answer is a response model, so a field renamed in one place is
an error in mypy, not a null in an answer.
See docs/design.md.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from app.api.responses import (
    BacktestHeadline,
    DataSource,
    Figures,
    ModelPublic,
    ModelsPublic,
    ServingPublic,
    SkillPublic,
    TestFigures,
    VersionPublic,
    VersionSummary,
)
from app.serving.evidence import NOT_JUDGED, gate_verdict, network_skill
from app.serving.registry import ModelRegistry
from training import gate
from training.errors import BrokenVersionError
from training.gate import headline_ratio, stored_skill
from training.store import CHAMPION, ModelStore


def gate_evidence(metadata: dict[str, Any]) -> dict[str, Any]:
    """What a version's ranking rests on, as flat fields: its ratio to naive, what it was measured on, its data.

    The standard protocols carry these in a version's metadata and answers;
    whether it beats naive is the answer's evidence block
    (`app.serving.evidence`), which knows the gate's verdict.
    """
    ratio, basis = headline_ratio(metadata)
    skill = stored_skill(metadata, gate.DEFAULT_SIGNIFICANCE_LEVEL)
    return {
        "gate_ratio_to_naive": ratio,
        "gate_basis": basis,
        "trained_through": skill["trained_through"],
    }


def read_version(store: ModelStore, name: str, version: int) -> VersionPublic:
    """A version's metadata, typed; BrokenVersionError if it does not have the stored format."""
    metadata = store.read_metadata(name, version)
    # Versions trained before the path was left out still carry it: never answer with a server path.
    metadata["data"] = {key: value for key, value in (metadata.get("data") or {}).items() if key != "path"}
    try:
        return VersionPublic.model_validate(metadata)
    except ValidationError as error:
        raise BrokenVersionError(
            f"{name} v{version}: metadata.json does not have the stored format: {error}"
        ) from error


def _skill(metadata_json: dict[str, Any], verdict: str, champion_by: str | None) -> SkillPublic | None:
    """A version's stored skill with the gate's verdict: beats_naive only where the gate accepted it, as on answers."""
    if not metadata_json.get("skill"):
        return None
    skill = network_skill(stored_skill(metadata_json, gate.DEFAULT_SIGNIFICANCE_LEVEL), "", verdict, champion_by)
    skill.pop("served_as")
    return SkillPublic(**skill)


def _headline(metadata: VersionPublic, verdict: str = NOT_JUDGED, champion_by: str | None = None) -> VersionSummary:
    model = metadata.metrics.get("model", Figures())
    naive = metadata.metrics.get("naive", Figures())
    backtest = metadata.backtest
    metadata_json = metadata.model_dump(by_alias=True, exclude_unset=True)
    mase, basis = headline_ratio(metadata_json)
    # The headline repeats these fields of the metadata as they are.
    copied = {"version", "architecture", "window", "horizon", "features", "label", "created_at"}
    return VersionSummary(
        **metadata.model_dump(include=copied),
        data=DataSource.model_validate(metadata.data.model_dump(include={"name", "start", "end", "rows"})),
        test=TestFigures(
            **model.model_dump(include=set(TestFigures.model_fields) - {"naive_mae"}),
            naive_mae=naive.mae,
        ),
        backtest={
            forecaster: BacktestHeadline(**figures.model_dump(include=set(BacktestHeadline.model_fields)))
            for forecaster, figures in backtest.summary.items()
        }
        if backtest is not None and backtest.summary
        else None,
        backtest_coverage={level: figures.coverage for level, figures in backtest.coverage.items()}
        if backtest is not None and backtest.coverage
        else None,
        calendar=metadata_json.get("calendar"),
        trained_through=metadata_json.get("trained_through"),
        skill=_skill(metadata_json, verdict, champion_by),
        gate_ratio_to_naive=mase,
        gate_basis=basis,
    )


def describe_version(
    store: ModelStore,
    name: str,
    version: int,
    attempts: list[dict[str, Any]] | None = None,
    champion_by: str | None = None,
) -> VersionSummary:
    """Headline of one version, or its error if it is broken.

    `attempts` (the model's attempt ledger) gives the gate's verdict on it;
    `champion_by` who made it champion, when it is.
    """
    try:
        return _headline(read_version(store, name, version), gate_verdict(attempts or [], version), champion_by)
    except BrokenVersionError as error:
        return VersionSummary(version=version, error=str(error))


def serving_figures(registry: ModelRegistry, name: str) -> ServingPublic | None:
    """How the default version is being served: engine and micro-batching so far."""
    state = registry.models.get(name)
    if state is None or state.served is None:
        return None
    served = state.served
    batcher = served.batcher
    return ServingPublic(
        version=served.version,
        engine=served.model.engine,
        max_batch_size=batcher.max_batch_size,
        max_batch_wait_us=batcher.max_wait_us,
        batches=batcher.batches_run,
        windows=batcher.windows_run,
        mean_batch_size=round(batcher.windows_run / batcher.batches_run, 2) if batcher.batches_run else None,
    )


def describe_model(store: ModelStore, registry: ModelRegistry, name: str) -> ModelPublic:
    """A model's versions, aliases and the version served by default."""
    aliases = store.aliases(name)
    state = registry.models.get(name)
    attempts = store.attempts(name)
    return ModelPublic(
        name=name,
        versions=[
            describe_version(store, name, version, attempts, registry.promoted_by(name, version))
            for version in store.versions(name)
        ],
        aliases=aliases,
        champion=aliases.get(CHAMPION),
        default_version=state.served.version if state and state.served else None,
        note=None
        if CHAMPION in aliases
        else "no version has passed the promotion gate yet: unpinned requests get what the unpromoted_default "
        f"setting says ({registry.settings.unpromoted_default}); the network served is the one with the lowest "
        "ratio to naive (mean |log error|), and every answer's skill says it has no evidence of beating naive",
        serving_error=state.error if state else None,
        serving=serving_figures(registry, name),
    )


def describe_models(store: ModelStore, registry: ModelRegistry) -> ModelsPublic:
    """Every model in the store."""
    return ModelsPublic(models=[describe_model(store, registry, name) for name in store.model_names()])
