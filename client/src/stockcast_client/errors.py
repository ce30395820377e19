"""What the client raises: one class per outcome, each carrying what a caller needs to act or to report.

Answers with an error status become `ApiError` subclasses holding the
service's `detail`, the status and the request id (`X-Request-ID`, which
the service logs on every line of that request). Failures before an answer
are `ConnectionFailedError`; a call out of time is `DeadlineExceededError`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from stockcast_client.results import JobRecord


class StockcastClientError(Exception):
    """Every error the client raises; `request_id` matches the service's log lines when it answered."""

    def __init__(self, message: str, *, method: str = "", path: str = "", request_id: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.method = method
        self.path = path
        self.request_id = request_id


class ApiError(StockcastClientError):
    """The service answered with an error status; `detail` says what was wrong and what it expected."""

    status: int = 0

    def __init__(
        self,
        detail: str,
        *,
        status: int,
        method: str = "",
        path: str = "",
        request_id: str | None = None,
        errors: list[dict[str, Any]] | None = None,
        retry_after: float | None = None,
    ) -> None:
        where = f"{method} {path}: " if method else ""
        super().__init__(f"{where}{status} {detail}", method=method, path=path, request_id=request_id)
        self.status = status
        self.detail = detail
        self.errors = errors or []
        self.retry_after = retry_after


class BadRequestError(ApiError):
    """400."""


class UnauthorizedError(ApiError):
    """401: no API key, or one the service does not know (STOCKCAST_API_KEY)."""


class ForbiddenError(ApiError):
    """403: the key lacks the scope (changes need `admin`), or a cross-origin change."""


class NotFoundError(ApiError):
    """404: an unknown model, version, alias, dataset or job."""


class ConflictError(ApiError):
    """409: a name clash, a finished job, rows that would change history, a version that cannot be served."""


class PayloadTooLargeError(ApiError):
    """413: an upload or body over the service's limit."""


class UnprocessableEntityError(ApiError):
    """422: a malformed request; `errors` lists each field when the service validated one."""


class RateLimitedError(ApiError):
    """429: too many changes a minute, too many queued jobs or pinned loads; `retry_after` says when to come back."""


class ServiceUnavailableError(ApiError):
    """503: the inference process is restarting, the job database or the files are unreachable."""


class ServerError(ApiError):
    """Any other 5xx."""


ERRORS_BY_STATUS: dict[int, type[ApiError]] = {
    400: BadRequestError,
    401: UnauthorizedError,
    403: ForbiddenError,
    404: NotFoundError,
    409: ConflictError,
    413: PayloadTooLargeError,
    422: UnprocessableEntityError,
    429: RateLimitedError,
    503: ServiceUnavailableError,
}


def error_class(status: int) -> type[ApiError]:
    """The exception class for an error status."""
    if status in ERRORS_BY_STATUS:
        return ERRORS_BY_STATUS[status]
    return ServerError if status >= 500 else ApiError


class ConnectionFailedError(StockcastClientError):
    """No answer: the service could not be reached, or the connection broke or timed out.

    `sent` is False when no byte of the request left (the connection was
    refused or never opened), so the service cannot have acted on it.
    """

    def __init__(self, message: str, *, sent: bool, method: str = "", path: str = "", request_id: str | None = None):
        super().__init__(message, method=method, path=path, request_id=request_id)
        self.sent = sent


class DeadlineExceededError(StockcastClientError):
    """The call's deadline passed (retries included); `last_error` is the last failure seen, if any."""

    def __init__(self, message: str, *, last_error: StockcastClientError | None, method: str = "", path: str = ""):
        request_id = last_error.request_id if last_error is not None else None
        super().__init__(message, method=method, path=path, request_id=request_id)
        self.last_error = last_error


class JobFailedError(StockcastClientError):
    """A training job ended `failed`; `record.error` says why."""

    def __init__(self, record: JobRecord) -> None:
        super().__init__(f"job {record.id} failed: {record.error}")
        self.record = record


class JobWaitTimeoutError(StockcastClientError):
    """`Job.wait` gave up before the job finished; `record` is the last state seen (the job goes on)."""

    def __init__(self, record: JobRecord, timeout: float) -> None:
        super().__init__(f"job {record.id} still {record.status} after {timeout:g} s")
        self.record = record


__all__ = [
    "ApiError",
    "BadRequestError",
    "ConflictError",
    "ConnectionFailedError",
    "DeadlineExceededError",
    "ForbiddenError",
    "JobFailedError",
    "JobWaitTimeoutError",
    "NotFoundError",
    "PayloadTooLargeError",
    "RateLimitedError",
    "ServerError",
    "ServiceUnavailableError",
    "StockcastClientError",
    "UnauthorizedError",
    "UnprocessableEntityError",
    "error_class",
]
