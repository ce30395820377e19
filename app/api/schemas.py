"""Request and response models: pydantic checks types, finiteness and signs here.

The served version's metadata then checks the window's length and columns
(`app.serving.windows`). See docs/design.md.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, create_model, model_validator

from training.config import optional_fields

FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]
Price = Annotated[float, Field(gt=0, allow_inf_nan=False, description="A price; must be positive and finite.")]
Volume = Annotated[float, Field(ge=0, allow_inf_nan=False, description="Shares traded; zero allowed.")]
ModelName = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$", examples=["msft"])]


class PriceRow(BaseModel):
    """One trading day of the window, oldest first."""

    model_config = ConfigDict(extra="forbid")

    date: dt.date | None = Field(None, description="Trading day; when given, forecasts carry dates.")
    open: Price
    high: Price
    low: Price
    close: Price
    volume: Volume
    adj_close: Price | None = None


def _window_kind(value: Any) -> str | None:
    """Pick the window form from its first row so errors speak of one form only."""
    if isinstance(value, list) and value:
        first = value[0]
        if isinstance(first, dict | BaseModel):
            return "rows"
        if isinstance(first, list | tuple):
            return "arrays"
    return None


WindowInput = Annotated[
    Annotated[list[PriceRow], Tag("rows")] | Annotated[list[list[FiniteFloat]], Tag("arrays")],
    Discriminator(
        _window_kind,
        custom_error_type="window_form",
        custom_error_message=(
            "window must be a non-empty list of rows, oldest first: objects "
            '{"date", "open", "high", "low", "close", "volume"} or arrays of numbers in the model\'s feature order'
        ),
    ),
]


class VersionSelector(BaseModel):
    """Which version answers: a number, an alias, or (neither) the champion."""

    model_config = ConfigDict(extra="forbid")

    model: ModelName
    version: int | None = Field(None, ge=1, description="Pin a version; default: the champion.")
    alias: str | None = Field(None, description='Serve the version an alias points at, e.g. "champion".')

    @model_validator(mode="after")
    def _one_selector(self) -> VersionSelector:
        if self.version is not None and self.alias is not None:
            raise ValueError("give either version or alias, not both")
        return self


LAST_DATE_DESCRIPTION = (
    "For a window sent without dates (arrays): the date of its last row. The forecast is then dated, checked"
    " for being in-sample, and scored by the ledger when its actual closes arrive; without it, it cannot be."
)


class PredictRequest(VersionSelector):
    """A forecast request for one window."""

    window: WindowInput
    last_date: dt.date | None = Field(None, description=LAST_DATE_DESCRIPTION)


@dataclass(frozen=True)
class ArrayWindowRequest:
    """A /predict request whose window arrived as a finite (rows, columns) array (`app.api.predict`)."""

    selector: VersionSelector
    window: np.ndarray
    last_date: dt.date | None = None

    @property
    def model(self) -> str:
        """Model name."""
        return self.selector.model

    @property
    def version(self) -> int | None:
        """Pinned version, if any."""
        return self.selector.version

    @property
    def alias(self) -> str | None:
        """Alias to serve, if any."""
        return self.selector.alias


class BatchPredictRequest(VersionSelector):
    """Many windows forecast in one request (one inference call)."""

    windows: list[WindowInput] = Field(min_length=1, description="Windows, each exactly `window` rows.")
    last_dates: list[dt.date | None] | None = Field(
        None, description="Per window sent as arrays, the date of its last row (see `last_date` of /predict)."
    )


class Interval(BaseModel):
    """Lower and upper bound of a prediction interval, in price units."""

    lower: float
    upper: float


class ForecastStep(BaseModel):
    """One forecast step."""

    step: int
    date: dt.date | None = None
    close: float = Field(description="Forecast of the label column (see `label`) in price units.")
    intervals: dict[str, Interval] = Field(
        default_factory=dict, description='Conformal intervals by level ("80", "90", "95").'
    )


class Skill(BaseModel):
    """A version's out-of-sample evidence and how it came to be served; on every answer and in /models.

    On answers, the fields of the evidence block (`served_as` to `ratio_to_naive`)
    are also in V2 `parameters` (as `evidence_<field>`) and TF Serving's `evidence`.
    """

    beats_naive: bool = Field(
        description="One-sided DM tests on |log error| reject 'no better than naive' at step 1 and pooled; on answers"
        " only for a version the gate promoted (a refused or hand-promoted network never shows true)."
    )
    beats_drift: bool = Field(False, description="A one-sided DM test on |log error| rejects 'no better than drift'.")
    coverage_ok: bool | None = Field(
        None,
        description="The 90 % band covers as served: path bands on path coverage, per-step bands on every step"
        " (Holm); null when not measured.",
    )
    minimum_detectable_effect: float | None = Field(
        None,
        description="The smallest edge in mean |log error| over naive the backtest finds with 80 % power at its level.",
    )
    promoted_by: str | None = Field(
        None,
        description="On answers: 'gate' (the promotion gate, or the monitor on live evidence) or 'manual' (an alias"
        " moved by hand) when the served version is the champion; null otherwise.",
    )
    gate_verdict: str | None = Field(
        None, description="On answers: the gate's verdict on the version: promoted, challenger, refused, not judged."
    )
    ratio_to_naive: float | None = Field(
        description="Backtest mean |log error| ratio to naive (below 1 beats naive); 1 on a naive answer."
    )
    ratio_to_naive_price: float | None = Field(None, description="The same in price units (MAE ratio), reported.")
    p_value: float | None = Field(description="The larger of the step-1 and pooled one-sided DM p-values vs naive.")
    p_value_drift: float | None = Field(None, description="The one-sided DM p-value vs drift, pooled over steps.")
    basis: str = Field(description="Where the evidence comes from: what was measured, on what, at which level.")
    trained_through: str | None = Field(description="Date of the last row the served network was trained on.")
    served_as: str | None = Field(
        None,
        description="On answers: 'champion', 'pinned', 'unpromoted' (no version passed the gate), "
        "'naive' (the naive forecast, setting unpromoted_default) or 'fallback: ...' (the champion failed to load).",
    )
    in_sample: bool | None = Field(
        None,
        description="On answers: true when a window ends before trained_through, so its targets were in the"
        " training data and this evidence does not apply to it; null when a window has no date.",
    )
    bands: dict[str, Any] | None = Field(
        None,
        description="On answers: which basis gave the intervals: 'calibrated' (as at training) until the served"
        " version has enough live scores, then 'adaptive' (adaptive conformal inference on its live scores), with"
        " each level's working coverage level per step.",
    )


class PredictResponse(BaseModel):
    """The forecast of one window."""

    model: str
    version: int
    label: str
    last_value: float = Field(description="The label's last value in the window (the naive forecast).")
    forecast: list[ForecastStep]
    skill: Skill
    forecast_id: str = Field(description="The ledger's id of this forecast (also the X-Forecast-Id header).")
    scorable: bool = Field(
        description="Whether the forecast is dated, so the ledger can score it when its closes arrive."
    )


class BatchPredictResponse(BaseModel):
    """Forecasts of many windows, in request order."""

    model: str
    version: int
    label: str
    forecasts: list[list[ForecastStep]]
    skill: Skill
    forecast_ids: list[str] = Field(description="The ledger's id of each forecast, in request order.")


class TrainTarget(BaseModel):
    """What a training job trains: the model name it stores under and the dataset it reads."""

    model_config = ConfigDict(extra="forbid")

    model: ModelName
    dataset: ModelName


if TYPE_CHECKING:
    TrainRequest = TrainTarget
else:
    # Every hyper-parameter comes from training.config.TrainConfig, with its
    # help text and bounds: a new one there is a new field here, and a value
    # out of bounds is a 422 naming the field and the bound before any job is queued.
    TrainRequest = create_model(
        "TrainRequest",
        __base__=TrainTarget,
        __doc__="Start a training job; omitted settings take the training defaults.",
        __module__=__name__,
        **optional_fields(),
    )


class JobPublic(BaseModel):
    """A training job's record."""

    id: str
    status: Literal["queued", "running", "succeeded", "failed", "cancelled"]
    request: dict[str, Any]
    progress: dict[str, Any] | None = None
    result: dict[str, Any] | None = None
    error: str | None = None
    cancel_requested: bool = False
    attempts: int = Field(
        0, description="Runs started so far; above 1 when a worker died and the job was retried on another one."
    )
    worker: str | None = Field(None, description="Scaled-out mode: host:pid of the worker running the latest attempt.")
    created_at: str
    started_at: str | None = None
    finished_at: str | None = None
    submitted_by: str | None = Field(None, description="Name of the API key that started the job.")


class JobsPublic(BaseModel):
    """Jobs, newest first."""

    jobs: list[JobPublic]


class JobAccepted(BaseModel):
    """Answer to POST /train."""

    job_id: str
    status: str
    location: str


class AppendRowsRequest(BaseModel):
    """Actual prices for a stored dataset, as rows keyed by the upload's column names."""

    model_config = ConfigDict(extra="forbid")

    # Cells stay as sent: the upload's row rules (training.data) judge them and name the row.
    rows: list[dict[str, Any]] = Field(
        min_length=1,
        description="One object a day: Date, Open, High, Low, Close, Adj Close, Volume as in the dataset's"
        " header (matched ignoring case and spaces). A row of nulls (a holiday) is skipped.",
    )
    replace: bool = Field(
        False,
        description="Write rows that change history (other values for a stored date, a date missing before the"
        " last); each change is logged. Without it they answer 409.",
    )
    calendar: str | None = Field(
        None,
        description="Trading calendar of the dataset (XNYS, XKRX, 24/7, ...) for `missing_sessions`; kept for"
        " later appends. Default: the one kept, else XNYS.",
    )


class AliasUpdate(BaseModel):
    """Point an alias at a version."""

    model_config = ConfigDict(extra="forbid")

    version: int = Field(ge=1)
    reason: str = Field("", max_length=500)
