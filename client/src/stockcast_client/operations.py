"""What each client method does, as a flow (`calls.py`): written once, run by `Client` and `AsyncClient`.

Which calls are sent again after a failure that may have reached the
service, and why that is safe:
- reads and forecasts: they change nothing (a repeated forecast is one
  more hit of the same ledger row);
- `train`: every request carries an Idempotency-Key, and the service answers
  a repeat with the job the first one queued;
- `append_rows`: a row equal to the stored one changes nothing;
- `set_alias`, `cancel`: the alias or the job is read first; sent again
  only if the first attempt certainly did not take effect;
- `upload_dataset`: the dataset is read first; the first attempt's upload
  if its SHA-256 is there, sent again only if no dataset has the name.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import re
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

from stockcast_client.calls import Answer, Call, ClientState, Deadline, Flow, Settled, Sleep, Verdict, send
from stockcast_client.errors import (
    ConnectionFailedError,
    DeadlineExceededError,
    JobFailedError,
    JobWaitTimeoutError,
    NotFoundError,
    RateLimitedError,
    ServerError,
    ServiceUnavailableError,
    StockcastClientError,
    UnprocessableEntityError,
)
from stockcast_client.results import (
    CLIENT_FALLBACK,
    AliasUpdate,
    AppendResult,
    Dataset,
    Forecast,
    ForecastStep,
    JobRecord,
    ModelInfo,
    Monitoring,
    forecasts_of_batch,
)
from stockcast_client.windows import (
    PreparedWindow,
    WindowShape,
    dataset_rows,
    is_frame,
    last_label_value,
    prepare_window,
    windows_of,
)

T = TypeVar("T")
logger = logging.getLogger("stockcast_client")
# What "the service is unavailable" means for `on_unavailable="naive"`: no answer in time, or one saying
# it cannot serve now. A 4xx other than 429 is the caller's to fix and is always raised.
UNAVAILABLE = (ConnectionFailedError, DeadlineExceededError, ServiceUnavailableError, ServerError, RateLimitedError)
BATCH_LIMIT = re.compile(r"at most (\d+) windows per request")


def _name(value: str) -> str:
    return quote(value, safe="")


def _json(answer: Answer) -> Any:
    return answer.json()


def _read(path: str, parse: Callable[[Answer], T], params: dict[str, str] | None = None) -> Call[T]:
    return Call("GET", path, parse=parse, params=params, idempotent=True)


# Models ------------------------------------------------------------------------


def describe_model(state: ClientState, name: str, deadline: Deadline) -> Flow[ModelInfo]:
    """GET /models/{name}, kept for later windows."""
    info: ModelInfo = yield from send(
        state, _read(f"/models/{_name(name)}", lambda answer: ModelInfo.from_json(answer.json())), deadline
    )
    state.remember(info)
    return info


def list_models(state: ClientState, deadline: Deadline) -> Flow[list[ModelInfo]]:
    """GET /models; every description is kept."""
    data = yield from send(state, _read("/models", _json), deadline)
    models = [ModelInfo.from_json(item) for item in data["models"]]
    for info in models:
        state.remember(info)
    return models


def read_monitoring(state: ClientState, name: str, deadline: Deadline) -> Flow[Monitoring]:
    """GET /models/{name}/monitoring."""
    return (
        yield from send(
            state,
            _read(f"/models/{_name(name)}/monitoring", lambda answer: Monitoring.from_json(answer.json())),
            deadline,
        )
    )


def set_alias(
    state: ClientState, model: str, alias: str, version: int, reason: str, deadline: Deadline
) -> Flow[AliasUpdate]:
    """PUT /models/{model}/aliases/{alias}; after a failure that may have landed, sent again only if it did not."""
    path = f"/models/{_name(model)}/aliases/{_name(alias)}"

    def reconcile(deadline: Deadline) -> Flow[Settled[AliasUpdate] | Verdict]:
        data = yield from send(state, _read(f"/models/{_name(model)}/aliases", _json), deadline)
        if data["aliases"].get(alias) != version:
            return Verdict.RESEND
        changes = [entry for entry in data["log"] if entry.get("alias") == alias and entry.get("to") == version]
        return Settled(AliasUpdate(aliases=dict(data["aliases"]), change=changes[-1] if changes else {}))

    call = Call(
        "PUT",
        path,
        parse=lambda answer: AliasUpdate.from_json(answer.json()),
        json={"version": version, "reason": reason},
        reconcile=reconcile,
    )
    try:
        return (yield from send(state, call, deadline))
    finally:
        # Whatever happened, the served version may have moved: describe the model again next time.
        state.forget(model)


# Forecasts ---------------------------------------------------------------------


def _shape(info: ModelInfo, version: int | None, alias: str | None) -> WindowShape | None:
    """The window the selected version takes; the default version's when the selector is unknown here."""
    found = info.version_info(version, alias) or info.version_info()
    if found is None or not found.window or not found.features:
        return None
    return WindowShape(found.window, found.features, found.label or "close")


def window_shape(
    state: ClientState, model: str, version: int | None, alias: str | None, deadline: Deadline, refresh: bool = False
) -> Flow[tuple[WindowShape, bool]]:
    """The shape of the selected version's windows, from the kept description if recent; and whether it was read now."""
    info = None if refresh else state.cached_model(model)
    fresh = info is None or (version is not None and info.version_info(version) is None)
    if fresh:
        info = yield from describe_model(state, model, deadline)
    assert info is not None
    shape = _shape(info, version, alias)
    if shape is None:
        raise NotFoundError(
            f"model '{model}' has no version that can be read to shape a window", status=404, path=f"/models/{model}"
        )
    return shape, fresh


def _selector(version: int | None, alias: str | None) -> dict[str, Any]:
    return {key: value for key, value in (("version", version), ("alias", alias)) if value is not None}


def forecast(
    state: ClientState,
    model: str,
    window: Any,
    version: int | None,
    alias: str | None,
    last_date: dt.date | None,
    deadline: Deadline,
) -> Flow[Forecast]:
    """POST /predict with the window in the model's shape; the naive fallback when asked for and unavailable."""
    try:
        shape, fresh = yield from window_shape(state, model, version, alias, deadline)
        while True:
            prepared = prepare_window(window, shape)
            origin = last_date or prepared.last_date
            body = {"model": model, **_selector(version, alias), "window": prepared.values}
            if origin is not None:
                body["last_date"] = origin.isoformat()
            call = Call(
                "POST",
                "/predict",
                parse=lambda answer: Forecast.from_json(answer.json(), answer.request_id),
                json=body,
                idempotent=True,
            )
            try:
                return (yield from send(state, call, deadline))
            except UnprocessableEntityError:
                # A kept description may be out of date (a new default version with another window): read it
                # again once, and send again only if the shape did change.
                if fresh:
                    raise
                previous = shape
                shape, fresh = yield from window_shape(state, model, version, alias, deadline, refresh=True)
                if shape == previous:
                    raise
    except UNAVAILABLE as error:
        fallback = _naive_or_raise(state, model, [window], version, alias, error)
        return fallback[0]


def forecast_many(
    state: ClientState,
    model: str,
    windows: Any,
    version: int | None,
    alias: str | None,
    last_dates: Sequence[dt.date | None] | None,
    deadline: Deadline,
) -> Flow[list[Forecast]]:
    """POST /predict/batch in requests of at most the service's batch limit, in order."""
    items = windows_of(windows)
    if last_dates is not None and len(last_dates) != len(items):
        raise ValueError(f"last_dates: one per window expected, {len(items)} windows, got {len(last_dates)} dates")
    forecasts: list[Forecast] = []
    try:
        shape, _ = yield from window_shape(state, model, version, alias, deadline)
        prepared = [prepare_window(window, shape) for window in items]
        while len(forecasts) < len(prepared):
            chunk = prepared[len(forecasts) : len(forecasts) + state.batch_limit]
            given = last_dates[len(forecasts) : len(forecasts) + len(chunk)] if last_dates is not None else None
            try:
                forecasts += yield from _batch(state, model, version, alias, chunk, given, deadline)
            except UnprocessableEntityError as error:
                # The service's limit is below the one assumed: it names it; every later request keeps to it.
                found = BATCH_LIMIT.search(error.detail)
                if found is None or int(found.group(1)) >= len(chunk):
                    raise
                state.batch_limit = int(found.group(1))
    except UNAVAILABLE as error:
        forecasts += _naive_or_raise(state, model, items[len(forecasts) :], version, alias, error)
    return forecasts


def _batch(
    state: ClientState,
    model: str,
    version: int | None,
    alias: str | None,
    chunk: list[PreparedWindow],
    given: Sequence[dt.date | None] | None,
    deadline: Deadline,
) -> Flow[list[Forecast]]:
    origins = [(given[index] if given else None) or window.last_date for index, window in enumerate(chunk)]
    body: dict[str, Any] = {"model": model, **_selector(version, alias), "windows": [w.values for w in chunk]}
    if any(origin is not None for origin in origins):
        body["last_dates"] = [origin.isoformat() if origin else None for origin in origins]
    last_values = [window.last_value for window in chunk]
    call = Call(
        "POST",
        "/predict/batch",
        parse=lambda answer: forecasts_of_batch(answer.json(), last_values, answer.request_id),
        json=body,
        idempotent=True,
    )
    return (yield from send(state, call, deadline))


def _naive_or_raise(
    state: ClientState,
    model: str,
    windows: list[Any],
    version: int | None,
    alias: str | None,
    error: StockcastClientError,
) -> list[Forecast]:
    """Each window's last value as its forecast (`on_unavailable="naive"`), or the error raised again.

    Horizon, label and feature order come from the model's last description,
    however old; without one, one step of `close`, and arrays cannot be read.
    """
    if state.options.on_unavailable != "naive":
        raise error
    info = state.cached_model(model, any_age=True)
    known = info.version_info(version, alias) if info is not None else None
    label = known.label if known is not None and known.label else "close"
    horizon = known.horizon if known is not None and known.horizon else 1
    features = known.features if known is not None else None
    fallbacks = []
    for window in windows:
        last = last_label_value(window, label, features)
        if last is None:
            raise error
        fallbacks.append(
            Forecast(
                model=model,
                version=None,
                label=label,
                last_value=last,
                steps=tuple(ForecastStep(step=step, date=None, close=last) for step in range(1, horizon + 1)),
                skill=None,
                forecast_id=None,
                served_as=CLIENT_FALLBACK,
                in_sample=None,
                scorable=False,
                request_id=error.request_id,
                fallback_reason=str(error),
            )
        )
    logger.warning("stockcast %s unavailable, %d naive forecast(s) answered: %s", model, len(fallbacks), error)
    return fallbacks


# Datasets ----------------------------------------------------------------------


def append_rows(
    state: ClientState, dataset: str, rows: Any, replace: bool, calendar: str | None, deadline: Deadline
) -> Flow[AppendResult]:
    """POST /datasets/{name}/rows; sent again freely, since rows equal to the stored ones change nothing."""
    body: dict[str, Any] = {"rows": dataset_rows(rows), "replace": replace}
    if calendar is not None:
        body["calendar"] = calendar
    call = Call(
        "POST",
        f"/datasets/{_name(dataset)}/rows",
        parse=lambda answer: AppendResult.from_json(answer.json()),
        json=body,
        idempotent=True,
    )
    return (yield from send(state, call, deadline))


def csv_bytes(data: Any) -> tuple[bytes, str]:
    """An upload's CSV bytes and file name, from a path, bytes or a DataFrame (a date index written as `Date`)."""
    if isinstance(data, bytes | bytearray):
        return bytes(data), "upload.csv"
    if is_frame(data):
        has_dates = hasattr(data.index, "to_pydatetime")
        text: str = data.to_csv(index=has_dates, index_label="Date" if has_dates else None, date_format="%Y-%m-%d")
        return text.encode(), "frame.csv"
    path = Path(data)
    return path.read_bytes(), path.name


def upload_dataset(
    state: ClientState, name: str, data: Any, overwrite: bool, filename: str | None, deadline: Deadline
) -> Flow[Dataset]:
    """POST /datasets; after a failure that may have landed, the dataset is read rather than the file sent twice."""
    content, default_name = csv_bytes(data)
    digest = hashlib.sha256(content).hexdigest()

    def reconcile(deadline: Deadline) -> Flow[Settled[Dataset] | Verdict]:
        try:
            stored = yield from send(state, _read(f"/datasets/{_name(name)}", _report), deadline)
        except NotFoundError:
            return Verdict.RESEND
        # Another content under the name: the first attempt did not land, or rows were appended since it did,
        # which a second upload would erase. Only the caller can tell.
        return Settled(stored) if stored.sha256 == digest else Verdict.GIVE_UP

    call = Call(
        "POST",
        "/datasets",
        parse=_report,
        data={"name": name, "overwrite": "true" if overwrite else "false"},
        files={"file": (filename or default_name, content, "text/csv")},
        reconcile=reconcile,
    )
    return (yield from send(state, call, deadline))


def _report(answer: Answer) -> Dataset:
    return Dataset.from_report(answer.json())


def list_datasets(state: ClientState, deadline: Deadline) -> Flow[list[Dataset]]:
    """GET /datasets."""
    data = yield from send(state, _read("/datasets", _json), deadline)
    return [Dataset.from_summary(item) for item in data["datasets"]]


def read_dataset(state: ClientState, name: str, deadline: Deadline) -> Flow[Dataset]:
    """GET /datasets/{name}."""
    return (yield from send(state, _read(f"/datasets/{_name(name)}", _report), deadline))


# Jobs --------------------------------------------------------------------------


def submit_training(
    state: ClientState, model: str, dataset: str, settings: dict[str, Any], key: str | None, deadline: Deadline
) -> Flow[tuple[str, str, bool]]:
    """POST /train with an Idempotency-Key, so a repeat answers the first job; (job id, key, whether replayed)."""
    key = key or uuid.uuid4().hex
    call = Call(
        "POST",
        "/train",
        parse=lambda answer: (answer.json()["job_id"], answer.headers.get("idempotent-replayed") == "true"),
        json={"model": model, "dataset": dataset, **settings},
        headers={"Idempotency-Key": key},
        idempotent=True,
    )
    job_id, replayed = yield from send(state, call, deadline)
    return job_id, key, replayed


def _job(answer: Answer) -> JobRecord:
    return JobRecord.from_json(answer.json())


def read_job(state: ClientState, job_id: str, deadline: Deadline) -> Flow[JobRecord]:
    """GET /jobs/{id}."""
    return (yield from send(state, _read(f"/jobs/{_name(job_id)}", _job), deadline))


def list_jobs(state: ClientState, status: str | None, limit: int, deadline: Deadline) -> Flow[list[JobRecord]]:
    """GET /jobs, newest first."""
    params = {"limit": str(limit), **({"status": status} if status else {})}
    data = yield from send(state, _read("/jobs", _json, params), deadline)
    return [JobRecord.from_json(item) for item in data["jobs"]]


def cancel_job(state: ClientState, job_id: str, deadline: Deadline) -> Flow[JobRecord]:
    """DELETE /jobs/{id}; after a failure that may have landed, the job is read rather than cancelled twice."""

    def reconcile(deadline: Deadline) -> Flow[Settled[JobRecord] | Verdict]:
        record = yield from read_job(state, job_id, deadline)
        return Settled(record) if record.cancel_requested or record.status == "cancelled" else Verdict.RESEND

    return (yield from send(state, Call("DELETE", f"/jobs/{_name(job_id)}", parse=_job, reconcile=reconcile), deadline))


def wait_for_job(
    state: ClientState,
    job_id: str,
    timeout: float | None,
    progress: Callable[[JobRecord], None] | None,
    poll_seconds: float,
) -> Flow[JobRecord]:
    """Poll GET /jobs/{id} until the job ends; `progress` sees every change of status or progress.

    Raises JobFailedError when it failed, JobWaitTimeoutError after `timeout` seconds
    (the job goes on). A finished job's model is described again next time.
    """
    waited = Deadline(timeout) if timeout is not None else None
    last: JobRecord | None = None
    while True:
        record = yield from read_job(state, job_id, Deadline(state.options.deadline))
        if progress is not None and (last is None or (record.status, record.progress) != (last.status, last.progress)):
            progress(record)
        last = record
        if record.finished:
            state.forget(record.model)
            if record.status == "failed":
                raise JobFailedError(record)
            return record
        if waited is not None and waited.remaining() < poll_seconds:
            assert timeout is not None
            raise JobWaitTimeoutError(record, timeout)
        yield Sleep(poll_seconds)


__all__ = [
    "UNAVAILABLE",
    "append_rows",
    "cancel_job",
    "csv_bytes",
    "describe_model",
    "forecast",
    "forecast_many",
    "list_datasets",
    "list_jobs",
    "list_models",
    "read_dataset",
    "read_job",
    "read_monitoring",
    "set_alias",
    "submit_training",
    "upload_dataset",
    "wait_for_job",
    "window_shape",
]
