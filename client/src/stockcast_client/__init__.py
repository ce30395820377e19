"""stockcast's Python client: forecasts, datasets, training jobs and monitoring over HTTP, sync or asyncio.

    from stockcast_client import Client
    with Client() as client:                      # STOCKCAST_URL, STOCKCAST_API_KEY
        forecast = client.forecast("msft", prices)  # a DataFrame of daily OHLCV rows
        print(forecast.to_frame())

Installs with httpx alone (pandas optional), never with the service's
TensorFlow or FastAPI. See README.md.
"""

from stockcast_client.async_client import AsyncClient, AsyncJob
from stockcast_client.errors import (
    ApiError,
    BadRequestError,
    ConflictError,
    ConnectionFailedError,
    DeadlineExceededError,
    ForbiddenError,
    JobFailedError,
    JobWaitTimeoutError,
    NotFoundError,
    PayloadTooLargeError,
    RateLimitedError,
    ServerError,
    ServiceUnavailableError,
    StockcastClientError,
    UnauthorizedError,
    UnprocessableEntityError,
)
from stockcast_client.options import Options
from stockcast_client.results import (
    CLIENT_FALLBACK,
    AliasUpdate,
    AppendResult,
    Band,
    Dataset,
    Forecast,
    ForecastStep,
    JobRecord,
    ModelInfo,
    Monitoring,
    MonitoringGroup,
    MonitoringWindow,
    Skill,
    VersionInfo,
)
from stockcast_client.sync_client import Client, Job

__version__ = "0.1.0"

__all__ = [
    "CLIENT_FALLBACK",
    "AliasUpdate",
    "ApiError",
    "AppendResult",
    "AsyncClient",
    "AsyncJob",
    "BadRequestError",
    "Band",
    "Client",
    "ConflictError",
    "ConnectionFailedError",
    "Dataset",
    "DeadlineExceededError",
    "ForbiddenError",
    "Forecast",
    "ForecastStep",
    "Job",
    "JobFailedError",
    "JobRecord",
    "JobWaitTimeoutError",
    "ModelInfo",
    "Monitoring",
    "MonitoringGroup",
    "MonitoringWindow",
    "NotFoundError",
    "Options",
    "PayloadTooLargeError",
    "RateLimitedError",
    "ServerError",
    "ServiceUnavailableError",
    "Skill",
    "StockcastClientError",
    "UnauthorizedError",
    "UnprocessableEntityError",
    "VersionInfo",
    "__version__",
]
