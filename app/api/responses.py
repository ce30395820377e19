"""What every route answers: response models (so OpenAPI documents each answer) and the error schemas.

Families per resource: `ModelPublic` and `ModelsPublic`, `VersionPublic`,
`AliasesPublic`, `DatasetPublic` and `DatasetsPublic`, `JobsPublic`. Records
that grow over time (a version's metadata, a data report) allow fields they
do not name, so a newer writer never breaks an older reader; routes answer
with `response_model_exclude_unset`, so a field absent from the record stays
absent from the answer. /predict's answers are documented in `app.api.schemas`
(encoded by orjson, not through these models). See docs/design.md.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from app.api.schemas import Skill as SkillPublic


class Open(BaseModel):
    """A record that may carry fields this build does not name."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)


# Errors ------------------------------------------------------------------------


class ErrorPublic(BaseModel):
    """Every error but a request validation error: what is wrong and what was expected."""

    detail: str = Field(examples=["unknown model 'aapl'; models: ['msft']"])


class ValidationErrorItem(BaseModel):
    """One problem pydantic found in the request."""

    loc: list[str | int] = Field(description="Where: `body`, `query` or `path`, then the field path.")
    msg: str
    type: str


class ValidationErrorPublic(BaseModel):
    """422: a one-line summary of every problem, and the problems one by one."""

    detail: str = Field(examples=["body.window[3].close: Input should be greater than 0"])
    errors: list[ValidationErrorItem] = Field(
        default_factory=list, description="Empty when the check came after parsing (a window of the wrong shape)."
    )


ERROR_DESCRIPTIONS: dict[int, str] = {
    400: "The body could not be read as the content type it declares (for example invalid multipart data).",
    401: "No API key, or one that is unknown or revoked (see WWW-Authenticate).",
    403: "The key lacks the scope this route needs, or the request came from a foreign web origin.",
    404: "Not found: the detail names what and lists what exists.",
    409: "Conflict with the current state: the detail says which.",
    413: "The upload or the request body is over the size limit.",
    415: "The body's content type is not one this route reads.",
    422: "The request is malformed: the detail says where and what was expected.",
    429: "Too many requests: the key's rate limit or a full training queue; Retry-After says when to retry.",
    500: "The inference process could not run the batch.",
    503: "Not available right now (the inference process is restarting, the job database is unreachable, or"
    " another change holds the dataset); retry shortly.",
}


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` for a route: each status code it can answer with, and the project's error schema for it."""
    return {
        code: {
            "model": ValidationErrorPublic if code == 422 else ErrorPublic,
            "description": ERROR_DESCRIPTIONS[code],
        }
        for code in codes
    }


# Health ------------------------------------------------------------------------


class HealthPublic(BaseModel):
    """Liveness."""

    status: Literal["ok"]


class InferenceProcessPublic(BaseModel):
    """The inference process as the API sees it."""

    pid: int | None = Field(description="None while it restarts.")
    restarts: int
    last_exit: str | None = Field(description="Why the last one stopped.")


class ReadyPublic(Open):
    """Readiness: which version of each model is served, and what is not loaded and why."""

    status: Literal["ready", "not ready"]
    ready: bool
    detail: str | None = Field(None, description="Only when not ready: why.")
    inference_process: InferenceProcessPublic
    models: dict[str, int | None] = Field(description="Model name to the version served by default.")
    not_loaded: list[str]
    problems: dict[str, str] = Field(description="Model name to why its default version is not served.")


# Versions ----------------------------------------------------------------------


class Figures(Open):
    """Error figures of one forecaster in price units (`per_step`, `windows` and more may follow)."""

    mae: float | None = None
    rmse: float | None = None
    mape: float | None = None
    mae_ratio_to_naive: float | None = Field(
        None, description="MAE divided by the naive last-value forecast's MAE on the same windows (the gate's figure)."
    )
    mase: float | None = Field(
        None, description="Hyndman-Koehler MASE: MAE over the training part's one-step naive MAE (as Darts, sktime)."
    )
    directional_accuracy: float | None = None
    always_up_rate: float | None = Field(None, description="Share of windows whose label rose: the base rate.")
    direction_windows: int | None = Field(None, description="Windows scored for direction (both moved).")
    per_step: list[dict[str, Any]] | None = None


class CoverageFigures(Open):
    """How often the actual value fell inside one interval level, and how wide the interval was."""

    coverage: float | None = None
    mean_width: float | None = None


class BacktestPublic(Open):
    """The walk-forward backtest: per-forecaster summary over every fold, interval coverage, the folds."""

    summary: dict[str, Figures] = Field(default_factory=dict)
    coverage: dict[str, CoverageFigures] = Field(default_factory=dict)


class DataSource(Open):
    """The data a version was trained on."""

    name: str | None = None
    start: str | None = None
    end: str | None = None
    rows: int | None = None


class VersionPublic(Open):
    """A version's metadata as stored (`metadata.json`, see docs/design.md "Store format")."""

    format_version: int
    name: str
    version: int
    created_at: str
    architecture: str
    hyperparameters: dict[str, Any]
    features: list[str]
    label: str
    window: int
    horizon: int
    transform: str
    scaler: dict[str, Any]
    data: DataSource
    split: dict[str, Any]
    metrics: dict[str, Figures]
    libraries: dict[str, str]
    files: dict[str, str]
    intervals: dict[str, Any] | None = None
    backtest: BacktestPublic | None = None
    training_seconds: float | None = None


class HeadlineFigures(BaseModel):
    """The figures a version's headline shows for one forecaster, on the test part or pooled over backtest folds."""

    mae: float | None = Field(description="Mean absolute error in price units.")
    mase: float | None
    directional_accuracy: float | None = Field(
        description="Share of the windows where both the price and the forecast moved whose direction was right."
    )
    mae_ratio_to_naive: float | None = None
    always_up_rate: float | None = None
    direction_windows: int | None = None


class TestFigures(HeadlineFigures):
    """The model's figures on the test part, and the naive forecast's MAE beside them."""

    rmse: float | None
    mape: float | None = Field(description="Mean absolute percentage error, in percent.")
    naive_mae: float | None = Field(description="MAE of the naive last-value forecast on the same windows.")


class BacktestHeadline(HeadlineFigures):
    """One forecaster's pooled walk-forward figures."""

    per_step: list[dict[str, Any]] | None = Field(None, description="The same figures for each forecast step.")


class VersionSummary(BaseModel):
    """A version's headline in /models; a version that cannot be read has only `version` and `error`."""

    version: int
    error: str | None = Field(None, description="Only for a broken version: why it cannot be read.")
    architecture: str | None = None
    window: int | None = None
    horizon: int | None = None
    features: list[str] | None = None
    label: str | None = None
    created_at: str | None = None
    data: DataSource | None = None
    test: TestFigures | None = None
    backtest: dict[str, BacktestHeadline] | None = None
    backtest_coverage: dict[str, float | None] | None = None
    calendar: str | None = Field(None, description="Trading calendar of the forecast dates (XNYS, 24/7, ...).")
    trained_through: str | None = Field(None, description="Date of the last row the served network was fitted on.")
    skill: SkillPublic | None = None
    gate_ratio_to_naive: float | None = Field(
        None, description="The MAE ratio to the naive forecast that the promotion gate ranks this version by."
    )
    gate_basis: str | None = Field(
        None, description="Where that ratio comes from: 'walk-forward backtest' or, without one, 'test split'."
    )


class ServingPublic(BaseModel):
    """How the default version is being served: its engine and micro-batching so far."""

    version: int
    engine: Literal["xla", "graph"]
    max_batch_size: int
    max_batch_wait_us: int
    batches: int
    windows: int
    mean_batch_size: float | None


class ModelPublic(BaseModel):
    """A model: its versions, aliases and the version served by default."""

    name: str
    versions: list[VersionSummary]
    aliases: dict[str, int]
    champion: int | None
    default_version: int | None
    note: str | None
    serving_error: str | None
    serving: ServingPublic | None


class ModelsPublic(BaseModel):
    """Every model in the store."""

    models: list[ModelPublic]


# Aliases -----------------------------------------------------------------------


class AliasChange(BaseModel):
    """One line of a model's alias log."""

    model_config = ConfigDict(populate_by_name=True)

    alias: str
    previous: int | None = Field(alias="from", description="The version before; None when the alias was new.")
    to: int | None
    at: str
    reason: str
    by: str | None = Field(None, description="Name of the API key that made the change.")


class AliasesPublic(BaseModel):
    """A model's aliases and every change to them, oldest first."""

    aliases: dict[str, int]
    log: list[AliasChange]


class AliasUpdated(BaseModel):
    """The aliases after a change, and the change."""

    aliases: dict[str, int]
    change: AliasChange


# Datasets ----------------------------------------------------------------------


class DatasetPublic(Open):
    """A stored dataset's data report: rows read, kept and dropped (and why), dates, gaps, outliers, statistics."""

    name: str
    filename: str
    size: int = Field(alias="bytes", description="Size of the stored CSV in bytes: the upload and appended rows.")
    sha256: str | None = Field(None, description="SHA-256 of the stored CSV (what a trained version records).")
    uploaded_at: str
    uploaded_by: str | None = Field(None, description="Name of the API key that uploaded it.")
    appended_at: str | None = Field(None, description="When rows were last appended.")
    appended_by: str | None = Field(None, description="Name of the API key that last appended rows.")
    rows_read: int
    rows_kept: int
    rows_dropped: dict[str, int]
    date_range: dict[str, Any]
    columns: list[str]


class DatasetSummary(BaseModel):
    """A dataset in the list."""

    name: str
    filename: str | None
    rows: int | None = Field(description="Rows kept after cleaning.")
    start: str | None
    end: str | None
    uploaded_at: str | None


class DatasetsPublic(BaseModel):
    """Every stored dataset."""

    datasets: list[DatasetSummary]


class CorrectionPublic(BaseModel):
    """A change of history written with `replace`, as the dataset's log keeps it."""

    date: str
    old: dict[str, float | None] | None = Field(
        description="The stored values; null when the date was not in the dataset (a gap filled)."
    )
    new: dict[str, float | None]
    by: str | None = Field(description="Name of the API key that sent it.")
    at: str | None


class SkippedRow(BaseModel):
    """A request row left out, as an upload leaves such a row out."""

    index: int = Field(description="Position in the request, from 0.")
    date: str
    reason: str = Field(examples=["missing_values"])


class RowsAppended(BaseModel):
    """What an append changed, and the dataset after it."""

    dataset: str
    rows_added: int = Field(description="Rows for dates the dataset did not have.")
    rows_replaced: int = Field(description="Stored rows corrected (replace=true).")
    unchanged: int = Field(description="Rows equal to the stored ones: nothing written (a retry is safe).")
    added_dates: list[str]
    replaced_dates: list[str]
    first_new_date: str | None
    last_new_date: str | None
    previous_last_date: str
    last_date: str = Field(description="The dataset's last date after the append.")
    rows: int = Field(description="The dataset's rows after cleaning, after the append.")
    sha256: str = Field(description="SHA-256 of the stored CSV after the append.")
    calendar: str = Field(description="The trading calendar `missing_sessions` follows.")
    missing_sessions: list[str] | None = Field(
        description="Sessions of the calendar after previous_last_date, up to last_date, that have no row;"
        " null when the calendar has no sessions for those years."
    )
    corrections: list[CorrectionPublic] = Field(description="Changes of history written (and logged).")
    skipped: list[SkippedRow]
    zero_volume: list[str] = Field(description="New dates with volume 0: kept and flagged, as an upload does.")
    ignored_columns: list[str] = Field(description="Request columns the dataset does not have (not written).")
    scored_forecasts: int = Field(
        0, description="Served forecasts the forecast ledger scored against these rows (their targets' closes)."
    )
