"""Uploaded price datasets."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, UploadFile, status

from app.api.deps import DatasetsDep, SettingsDep
from training.errors import StockcastError

router = APIRouter(prefix="/datasets", tags=["datasets"])


class UploadTooLargeError(StockcastError):
    """The upload is over the size limit."""

    status_code = 413


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    responses={
        409: {"description": "Name taken."},
        413: {"description": "Too large."},
        422: {"description": "Bad CSV."},
    },
)
async def create_dataset(
    datasets: DatasetsDep,
    settings: SettingsDep,
    file: Annotated[UploadFile, File(description="CSV: Date, Open, High, Low, Close[, Adj Close], Volume")],
    name: Annotated[str, Form(description="Dataset name (letters, digits, '_', '-', '.')", examples=["aapl"])],
    overwrite: Annotated[bool, Form(description="Replace an existing dataset of this name")] = False,
) -> dict[str, Any]:
    """Upload a price CSV; answers with its data report (rows, dates, dropped rows and why, outliers)."""
    content = await file.read(settings.max_upload_bytes + 1)
    if len(content) > settings.max_upload_bytes:
        raise UploadTooLargeError(f"file is larger than the {settings.max_upload_bytes} byte limit")
    return await asyncio.to_thread(datasets.save, name, content, file.filename or "upload.csv", overwrite)


@router.get("")
async def read_datasets(datasets: DatasetsDep) -> dict[str, Any]:
    """Stored datasets with their row counts and date ranges."""
    summaries = []
    for name in datasets.names():
        report = datasets.report(name)
        summaries.append({key: report.get(key) for key in ("name", "filename", "rows", "start", "end", "uploaded_at")})
    return {"datasets": summaries}


@router.get("/{name}", responses={404: {"description": "Unknown dataset."}})
async def read_dataset(name: str, datasets: DatasetsDep) -> dict[str, Any]:
    """The full data report of one dataset."""
    return datasets.report(name)
