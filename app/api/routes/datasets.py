"""Uploaded price datasets, and actual prices appended to them.

The reads are plain `def` routes: FastAPI runs them in its thread pool, off
the event loop; uploads and appends hand their file work to a thread.
See docs/design.md.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Query, Request, UploadFile, status

from app.api.deps import CallerDep, DatasetsDep, SettingsDep
from app.api.examples import APPEND_CSV_EXAMPLE, APPEND_EXAMPLES
from app.api.json_body import documented_body
from app.api.predict import parse_body
from app.api.responses import DatasetPublic, DatasetsPublic, DatasetSummary, RowsAppended, error_responses
from app.api.schemas import AppendRowsRequest
from app.api.upload_limit import too_large_message
from app.core.metrics import DATASET_APPENDS, DATASET_UPLOADS
from app.online import flush_ledger, score_appended
from training.errors import StockcastError

router = APIRouter(prefix="/datasets", tags=["datasets"])


class UploadTooLargeError(StockcastError):
    """The upload is over the size limit."""

    status_code = 413


class UnsupportedMediaTypeError(StockcastError):
    """A body in a content type the route does not read."""

    status_code = 415


# JSON rows (documented from AppendRowsRequest) or CSV text with a header row.
APPEND_BODY: dict[str, Any] = documented_body(AppendRowsRequest, APPEND_EXAMPLES)
APPEND_BODY["requestBody"]["content"]["text/csv"] = {
    "schema": {"type": "string", "description": "CSV with a header row, in the upload's columns."},
    "example": APPEND_CSV_EXAMPLE,
}


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=DatasetPublic,
    responses=error_responses(400, 409, 413, 422),
)
async def create_dataset(
    datasets: DatasetsDep,
    settings: SettingsDep,
    caller: CallerDep,
    file: Annotated[UploadFile, File(description="CSV: Date, Open, High, Low, Close[, Adj Close], Volume")],
    name: Annotated[str, Form(description="Dataset name (letters, digits, '_', '-', '.')", examples=["aapl"])],
    overwrite: Annotated[bool, Form(description="Replace an existing dataset of this name")] = False,
) -> DatasetPublic:
    """Upload a price CSV; answers with its data report (rows, dates, dropped rows and why, outliers)."""
    try:
        content = await file.read(settings.max_upload_bytes + 1)
        if len(content) > settings.max_upload_bytes:
            raise UploadTooLargeError(too_large_message(settings.max_upload_bytes))
        report = await asyncio.to_thread(
            datasets.save, name, content, file.filename or "upload.csv", overwrite, uploaded_by=caller
        )
    except StockcastError:
        DATASET_UPLOADS.labels("rejected").inc()
        raise
    DATASET_UPLOADS.labels("stored").inc()
    return DatasetPublic.model_validate(report)


@router.get("", response_model=DatasetsPublic)
def read_datasets(datasets: DatasetsDep) -> DatasetsPublic:
    """Stored datasets with their row counts and date ranges."""
    summaries = []
    for name in datasets.names():
        report = DatasetPublic.model_validate(datasets.report(name))
        summaries.append(
            DatasetSummary(
                name=report.name,
                filename=report.filename,
                rows=report.rows_kept,
                start=report.date_range.get("start"),
                end=report.date_range.get("end"),
                uploaded_at=report.uploaded_at,
            )
        )
    return DatasetsPublic(datasets=summaries)


@router.get("/{name}", response_model=DatasetPublic, responses=error_responses(404, 422))
def read_dataset(name: str, datasets: DatasetsDep) -> DatasetPublic:
    """The full data report of one dataset."""
    return DatasetPublic.model_validate(datasets.report(name))


@router.post(
    "/{name}/rows",
    response_model=RowsAppended,
    responses=error_responses(404, 409, 413, 415, 422, 503),
    openapi_extra=APPEND_BODY,
)
async def append_rows(
    name: str,
    request: Request,
    datasets: DatasetsDep,
    caller: CallerDep,
    replace: Annotated[bool, Query(description="For a CSV body: write rows that change history (logged).")] = False,
    calendar: Annotated[str | None, Query(description="For a CSV body: the dataset's trading calendar.")] = None,
) -> RowsAppended:
    """Append actual prices: new dates are added, a retry changes nothing, other values for a stored date are a 409."""
    media_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    rows: bytes | list[dict[str, Any]]
    if media_type == "text/csv":
        rows = await request.body()
    elif media_type == "application/json":
        body = parse_body(AppendRowsRequest, await request.body())
        rows, replace, calendar = body.rows, body.replace or replace, body.calendar or calendar
    else:
        raise UnsupportedMediaTypeError(
            f"content type '{media_type}' is not read here: send application/json {{\"rows\": [...]}} or text/csv"
        )
    # Forecasts served before these rows existed are written with the data as it was (live, not replays).
    await flush_ledger(request.app)
    try:
        result = await asyncio.to_thread(
            datasets.append, name, rows, replace=replace, appended_by=caller, calendar=calendar
        )
    except StockcastError:
        DATASET_APPENDS.labels("rejected").inc()
        raise
    DATASET_APPENDS.labels("changed" if result.changed_dates else "unchanged").inc()
    answer = RowsAppended.model_validate(result, from_attributes=True)
    if result.changed_dates:
        answer.scored_forecasts, answer.scoring = await score_appended(request.app, name)
    return answer
