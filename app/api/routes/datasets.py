"""Uploaded price datasets.

The reads are plain `def` routes: FastAPI runs them in its thread pool, off the event loop.
See docs/design.md.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, File, Form, UploadFile, status

from app.api.deps import CallerDep, DatasetsDep, SettingsDep
from app.api.responses import DatasetPublic, DatasetsPublic, DatasetSummary, error_responses
from app.api.upload_limit import too_large_message
from app.core.metrics import DATASET_UPLOADS
from training.errors import StockcastError

router = APIRouter(prefix="/datasets", tags=["datasets"])


class UploadTooLargeError(StockcastError):
    """The upload is over the size limit."""

    status_code = 413


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
