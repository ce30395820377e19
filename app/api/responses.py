"""What every route answers: response models (so OpenAPI documents each answer) and the error schemas.

Families per resource: `ModelPublic` and `ModelsPublic`, `VersionPublic`,
`AliasesPublic`, `DatasetPublic` and `DatasetsPublic`, `JobsPublic`,
`MonitoringPublic`, `SchedulePublic`. Records that grow over time (a version's metadata, a
data report) allow fields they do not name, so a newer writer never breaks
an older reader; routes answer with `response_model_exclude_unset`, so a
field absent from the record stays absent from the answer. /predict's
answers are documented in `app.api.schemas` (encoded by orjson, not
through these models). See docs/design.md.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from app.api.schemas import Skill as SkillPublic
from app.schedules.spec import ScheduleSpec


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
    store: str | None = Field(
        None,
        description="With object storage (STOCKCAST_STORE_URL) only: 'reachable', or why not. An unreachable store"
        " leaves the replica ready: it serves what it has loaded, and writes answer 503 until the store is back.",
    )
    engines: dict[str, str | None] = Field(
        default_factory=dict,
        description="Model name to what runs its default version: onnx, xla or tensorflow (null while reloading).",
    )


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
    mase_log: float | None = Field(
        None,
        description="MASE on log prices: mean |log(actual / forecast)| over the training part's mean absolute "
        "daily log return; comparable across assets and price levels.",
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
    engine: Literal["onnx", "xla", "tensorflow"] | None = Field(
        description="What runs the network: ONNX Runtime, TensorFlow's XLA-compiled graph, or its plain graph"
        " (until XLA takes over); null while the inference process reloads it."
    )
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
    by: str | None = Field(
        None, description="Name of the API key that made the change; 'monitor' for a demotion by the monitoring."
    )
    figures: dict[str, Any] | None = Field(
        None, description="A demotion's evidence: the statuses of the last sessions, coverage, ratio to naive."
    )


class AliasesPublic(BaseModel):
    """A model's aliases and every change to them, oldest first."""

    aliases: dict[str, int]
    log: list[AliasChange]


class AliasUpdated(BaseModel):
    """The aliases after a change, and the change."""

    aliases: dict[str, int]
    change: AliasChange


# Schedules ---------------------------------------------------------------------


class ScheduleRunPublic(BaseModel):
    """One fired slot of a schedule: the job it submitted, or why it was skipped."""

    slot: str = Field(description="When the slot fell due (UTC): a session's close plus after_close_minutes.")
    outcome: Literal["submitted", "skipped"]
    reason: str | None = Field(description="Why it was skipped (too few new rows, the queue refusing, ...).")
    job_id: str | None
    rows: int | None = Field(description="The dataset's rows when it fired.")
    slots: int = Field(description="Slots it stands for: above 1 when runs missed while nothing ticked coalesced.")
    at: str = Field(description="When the tick fired it.")
    revision: int = Field(description="The schedule's revision it fired under.")


class ScheduleJob(BaseModel):
    """The last job a schedule submitted, as its record says now."""

    id: str
    status: str
    created_at: str | None
    started_at: str | None
    finished_at: str | None
    error: str | None
    version: int | None = Field(description="The version it trained, once it has.")
    promoted: bool | None = Field(description="Whether the gate promoted that version.")


class SchedulePublic(ScheduleSpec):
    """A model's retraining schedule, when it runs next, and what its runs did."""

    model_config = ConfigDict(extra="forbid")

    model: str
    training: dict[str, Any] = Field(  # type: ignore[assignment]
        description="The training settings set for each run; the others take TrainConfig's defaults."
    )
    calendar: str = Field(description="The exchange calendar its slots follow.")
    revision: int = Field(description="Counts the times it was set; a new revision re-anchors the slots.")
    anchor: str = Field(description="Slots count from here (when the revision was set).")
    created_at: str
    updated_at: str
    updated_by: str | None = Field(description="Name of the API key that set it.")
    next_run: str | None = Field(
        description="The next slot (UTC); null when disabled. A due slot fires at the next tick."
    )
    last_slot: str | None = Field(description="The last slot fired (submitted or skipped).")
    last_rows: int | None = Field(description="The dataset's rows at the last submitted run: new rows count from here.")
    runs: list[ScheduleRunPublic] = Field(description="The latest fired slots, newest first.")
    last_job: ScheduleJob | None
    last_gate: dict[str, Any] | None = Field(description="The promotion gate's decision on the last job's version.")


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
    scored_forecasts: int | None = Field(
        0,
        description="Served forecasts the forecast ledger scored against these rows (their targets' closes); null"
        " when a queue worker scores them (scaled out) or the ledger is off.",
    )
    scoring: Literal["done", "queued", "off", "nothing_new"] = Field(
        "nothing_new",
        description="done: scored before this answer; queued: a queue worker scores them (scaled out); off: no"
        " ledger; nothing_new: the append changed nothing.",
    )


# Monitoring --------------------------------------------------------------------

# The statuses of `app.ledger.monitoring.STATUS_CODES` (a test keeps the two the same).
MonitoringStatus = Literal["ok", "insufficient_data", "coverage_breach", "skill_lost"]


class LikelihoodRatio(BaseModel):
    """A likelihood-ratio test: its statistic and p-value (None with too few scores)."""

    lr: float | None
    p_value: float | None


class BandCoverage(BaseModel):
    """One band level over a window's step-1 forecasts: realised coverage and the tests risk teams use on VaR bands."""

    nominal: float = Field(description="The coverage the band was served at (0.9 for the 90 % band).")
    coverage: float | None = Field(description="Share of step-1 actuals inside the band; None without scores.")
    observations: int
    breaches: int = Field(description="Step-1 actuals outside the band.")
    direction: Literal["under", "over", "on"] | None = Field(
        description="Whether the band covered less or more than nominal."
    )
    kupiec: LikelihoodRatio = Field(description="Kupiec's proportion-of-failures test of the nominal rate (chi2 1 df).")
    christoffersen: LikelihoodRatio = Field(
        description="Christoffersen's independence test on the step-1 breach sequence in time order (chi2, 1 df):"
        " a small p-value means breaches cluster."
    )


class SkillTest(BaseModel):
    """The sign e-processes of one window's step-1 scores, as they stand at its end (`sequential_skill_test`)."""

    scores: int
    wins: int = Field(description="Scores where the model's |log error| was below naive's.")
    losses: int
    ties: int
    e_value_better: float = Field(description="Evidence that the model beats naive; reject 'not better' at 1/alpha.")
    e_value_worse: float = Field(description="Evidence that naive beats the model; reject 'not worse' at 1/alpha.")
    alpha: float
    beats_naive: bool
    worse_than_naive: bool


class SkillPath(BaseModel):
    """The anytime-valid skill test since the version went live: step-1 scores in the order they became known.

    Sign-test e-processes mixed over the bet size (Waudby-Smith & Ramdas
    2024); by Ville's inequality each crosses 1/alpha with probability at
    most alpha under its null, however often it is looked at.
    """

    scores: int
    threshold: float = Field(description="1 / STOCKCAST_MONITORING_SKILL_ALPHA.")
    e_value_better: float
    e_value_better_max: float
    better_since: str | None = Field(description="Target date the 'better than naive' e-process first crossed.")
    e_value_worse: float
    e_value_worse_max: float
    worse_since: str | None = Field(
        description="Target date the 'worse than naive' e-process first crossed: status skill_lost from then on."
    )


class DirectionFigures(BaseModel):
    """Direction of the step-1 forecast's move from the naive value against the actual's."""

    hit_rate: float | None = Field(description="Share of moves whose sign the forecast got right.")
    always_up_rate: float | None = Field(description="Share of moves that were up: the hit rate of always saying up.")
    scored: int = Field(description="Forecasts where both the forecast and the actual moved.")


class PlainFigures(BaseModel):
    """Counts, realised coverage per level and mean |log error| against naive's, without tests."""

    sessions: int
    forecasts: int
    scores: int
    coverage: dict[str, float | None] = Field(description="Band level to the share of actuals inside it.")
    mean_abs_log_error: float | None = Field(description="Mean |log(actual / forecast)|.")
    naive_mean_abs_log_error: float | None = Field(description="Mean |log(actual / naive)| on the same forecasts.")
    ratio_to_naive: float | None = Field(description="The two means' ratio: below 1 beats naive.")


class StepFigures(PlainFigures):
    """`PlainFigures` of one forecast step."""

    step: int


class MonitoringWindow(BaseModel):
    """Live scores of the window's sessions; the headline figures and the tests are on step 1."""

    sessions: int = Field(description="Scored sessions (distinct origin dates) in the window.")
    forecasts: int
    scores: int = Field(description="Score rows, one per forecast and scored step.")
    first_origin: str | None
    last_origin: str | None
    coverage: dict[str, BandCoverage]
    mean_abs_log_error: float | None
    naive_mean_abs_log_error: float | None
    ratio_to_naive: float | None
    skill: SkillTest
    direction: DirectionFigures
    per_step: list[StepFigures]
    all_steps: PlainFigures


class ReplayFigures(BaseModel):
    """Forecasts served after their target's close was already in the data: never mixed with live ones."""

    all_steps: PlainFigures
    per_step: list[StepFigures]


class MonitoringGroup(BaseModel):
    """One version as served one way (`served_as`): champion, pinned, unpromoted, naive, fallback."""

    version: int
    served_as: str
    status: MonitoringStatus
    reasons: list[str] = Field(description="Why the status is not ok, one sentence each.")
    live_sessions: int
    first_origin: str | None
    last_origin: str | None
    split_suspect: int = Field(description="Score rows near a split ratio: left out of every figure.")
    windows: dict[str, MonitoringWindow] = Field(description="last_20, last_60, last_250 and since_live.")
    skill_test: SkillPath
    replay: ReplayFigures


class MonitoringThresholds(BaseModel):
    """The settings the statuses were judged by."""

    coverage_alpha: float
    coverage_window: str
    skill_alpha: float
    skill_e_value: float
    skill_window: str
    min_scores: int


class MonitoringPublic(BaseModel):
    """How a model's served forecasts did against the closes that followed, and its status."""

    model: str
    served_version: int | None = Field(description="The version served by default now.")
    status: MonitoringStatus = Field(
        description="The status of the served version's unpinned group; without a served version, the worst group's."
    )
    status_of: dict[str, Any] | None = Field(description="The group (version, served_as) the status is from.")
    thresholds: MonitoringThresholds
    kept: dict[str, int] | None = Field(
        description="Forecasts kept: distinct (`kept`), requests answered with them (`hits`), undated (`undated`)."
    )
    unscorable: int | None = Field(description="Kept forecasts without an origin date: they can never be scored.")
    split_suspect: int
    groups: list[MonitoringGroup]
    challenger: dict[str, Any] | None = Field(
        None,
        description="The shadow challenger (alias `challenger`) beside the champion, on the same logged windows:"
        " one-sided paired Diebold-Mariano tests on step-1 live |log errors| against the champion (`vs_champion`)"
        " and naive (`vs_naive`) over the targets both have (`sessions`), and each one's coverage tests"
        " (Kupiec, Christoffersen) over `coverage_window`. Null without both aliases.",
    )
