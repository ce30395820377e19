"""Prometheus metrics in the text exposition format.

See docs/design.md.
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from app.core.metrics import exposition

router = APIRouter(tags=["operations"])


@router.get("/metrics", response_class=Response, responses={200: {"content": {"text/plain": {}}}})
def read_metrics() -> Response:
    """Request, batching, inference, job and model metrics for Prometheus to scrape."""
    # Plain def: collecting counts jobs in SQLite, which must not block the event loop.
    body, content_type = exposition()
    return Response(content=body, media_type=content_type)
