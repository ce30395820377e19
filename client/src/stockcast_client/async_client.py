"""`AsyncClient`: the asyncio client; every method runs the same flow as `Client`'s, with awaits."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any, TypeVar

import httpx

from stockcast_client import operations
from stockcast_client.calls import Answer, Attempt, ClientState, Deadline, Flow, NoAnswer, Sleep
from stockcast_client.options import OnUnavailable, Options, api_key_of, base_url_of
from stockcast_client.results import AliasUpdate, AppendResult, Dataset, Forecast, JobRecord, ModelInfo, Monitoring
from stockcast_client.sync_client import answer_of

T = TypeVar("T")


async def attempt_with(http: httpx.AsyncClient, instruction: Attempt) -> Answer | NoAnswer:
    """Send one attempt; what came back, or why nothing did."""
    request = instruction.request
    try:
        response = await http.request(
            request.method,
            request.url,
            headers=request.headers,
            content=request.content,
            data=request.data,
            files=request.files,
            params=request.params,
            timeout=instruction.timeout,
        )
    except httpx.UnsupportedProtocol as error:
        raise ValueError(f"base_url: {error}") from error
    except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as error:
        return NoAnswer(f"{type(error).__name__}: {error}", sent=False)
    except httpx.TransportError as error:
        return NoAnswer(f"{type(error).__name__}: {error}", sent=True)
    return answer_of(response, request.headers["X-Request-ID"])


async def run(flow: Flow[T], http: httpx.AsyncClient) -> T:
    """Run a flow with awaits."""
    reply: Answer | NoAnswer | None = None
    try:
        while True:
            instruction = flow.send(reply)
            if isinstance(instruction, Sleep):
                await asyncio.sleep(instruction.seconds)
                reply = None
            else:
                reply = await attempt_with(http, instruction)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]


class AsyncClient:
    """An asyncio client of the stockcast service; one per event loop is enough.

    `base_url` defaults to STOCKCAST_URL (else http://127.0.0.1:8000),
    `api_key` to STOCKCAST_API_KEY; the other arguments are `Options`
    fields. Close it (`aclose`, or `async with`) to free its connections.
    """

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        deadline: float | None = None,
        timeout: float | None = None,
        max_attempts: int | None = None,
        backoff_seconds: float | None = None,
        max_backoff_seconds: float | None = None,
        on_unavailable: OnUnavailable | None = None,
        max_batch_windows: int | None = None,
        model_cache_seconds: float | None = None,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        options = Options.given(
            deadline=deadline,
            timeout=timeout,
            max_attempts=max_attempts,
            backoff_seconds=backoff_seconds,
            max_backoff_seconds=max_backoff_seconds,
            on_unavailable=on_unavailable,
            max_batch_windows=max_batch_windows,
            model_cache_seconds=model_cache_seconds,
        )
        self._state = ClientState(base_url_of(base_url), api_key_of(api_key), options)
        self._owns_http = http is None
        self._http = http or httpx.AsyncClient()

    @property
    def base_url(self) -> str:
        """The service's URL."""
        return self._state.base_url

    @property
    def options(self) -> Options:
        """The settings this client runs with."""
        return self._state.options

    async def _run(self, flow: Flow[T]) -> T:
        return await run(flow, self._http)

    def _deadline(self, seconds: float | None) -> Deadline:
        return Deadline(self._state.options.deadline if seconds is None else seconds)

    # Forecasts

    async def forecast(
        self,
        model: str,
        window: Any,
        *,
        version: int | None = None,
        alias: str | None = None,
        last_date: dt.date | None = None,
        deadline: float | None = None,
    ) -> Forecast:
        """Forecast from the last `window` rows of a DataFrame, a 2-D array or a list of rows, oldest first.

        A DataFrame's columns are named as in an upload (Date, Open, High,
        Low, Close, Adj Close, Volume, any case); its dates (a Date column or
        a date index) date the forecast and let the ledger score it. Arrays
        and plain rows are in the model's feature order (`model(name)`);
        give `last_date` to date them. `version` or `alias` pins what serves.
        """
        return await self._run(
            operations.forecast(self._state, model, window, version, alias, last_date, self._deadline(deadline))
        )

    async def forecast_many(
        self,
        model: str,
        windows: Any,
        *,
        version: int | None = None,
        alias: str | None = None,
        last_dates: Sequence[dt.date | None] | None = None,
        deadline: float | None = None,
    ) -> list[Forecast]:
        """Forecast many windows (a list of what `forecast` takes, or a 3-D array) via /predict/batch, in order."""
        return await self._run(
            operations.forecast_many(self._state, model, windows, version, alias, last_dates, self._deadline(deadline))
        )

    # Models

    async def models(self, *, deadline: float | None = None) -> list[ModelInfo]:
        """Every model with its versions, aliases and default version."""
        return await self._run(operations.list_models(self._state, self._deadline(deadline)))

    async def model(self, name: str, *, deadline: float | None = None) -> ModelInfo:
        """One model, read now (and kept for shaping its windows)."""
        return await self._run(operations.describe_model(self._state, name, self._deadline(deadline)))

    async def monitoring(self, name: str, *, deadline: float | None = None) -> Monitoring:
        """How the model's served forecasts did once their closes arrived, and its status."""
        return await self._run(operations.read_monitoring(self._state, name, self._deadline(deadline)))

    async def set_alias(
        self, model: str, alias: str, version: int, *, reason: str = "", deadline: float | None = None
    ) -> AliasUpdate:
        """Point an alias (`champion` moves what is served) at a version; needs an admin key."""
        return await self._run(
            operations.set_alias(self._state, model, alias, version, reason, self._deadline(deadline))
        )

    # Datasets

    async def append_rows(
        self,
        dataset: str,
        rows: Any,
        *,
        replace: bool = False,
        calendar: str | None = None,
        deadline: float | None = None,
    ) -> AppendResult:
        """Append actual prices (a DataFrame, a row or a list of rows keyed as the upload's header); admin key.

        Rows equal to the stored ones change nothing, so a retried append is
        safe; other values for a stored date are a ConflictError unless `replace`.
        """
        return await self._run(
            operations.append_rows(self._state, dataset, rows, replace, calendar, self._deadline(deadline))
        )

    async def upload_dataset(
        self,
        name: str,
        data: Any,
        *,
        overwrite: bool = False,
        filename: str | None = None,
        deadline: float | None = None,
    ) -> Dataset:
        """Upload a price CSV (a path, bytes or a DataFrame) as dataset `name`; admin key."""
        return await self._run(
            operations.upload_dataset(self._state, name, data, overwrite, filename, self._deadline(deadline))
        )

    async def datasets(self, *, deadline: float | None = None) -> list[Dataset]:
        """Stored datasets with their row counts and dates."""
        return await self._run(operations.list_datasets(self._state, self._deadline(deadline)))

    async def dataset(self, name: str, *, deadline: float | None = None) -> Dataset:
        """One dataset's data report."""
        return await self._run(operations.read_dataset(self._state, name, self._deadline(deadline)))

    # Jobs

    async def train(
        self,
        model: str,
        dataset: str,
        *,
        idempotency_key: str | None = None,
        deadline: float | None = None,
        **settings: Any,
    ) -> AsyncJob:
        """Queue a training job (`settings`: architecture, epochs, ... as /train takes them); admin key.

        The request carries an Idempotency-Key (a new one unless given), so a
        retry answers the job the first attempt queued instead of a second.
        """
        job_id, key, replayed = await self._run(
            operations.submit_training(self._state, model, dataset, settings, idempotency_key, self._deadline(deadline))
        )
        return AsyncJob(self, job_id, idempotency_key=key, replayed=replayed)

    async def job(self, job_id: str) -> AsyncJob:
        """A handle on an existing job, read now."""
        job = AsyncJob(self, job_id)
        await job.refresh()
        return job

    async def jobs(
        self, *, status: str | None = None, limit: int = 100, deadline: float | None = None
    ) -> list[JobRecord]:
        """Jobs, newest first; `status` filters (queued, running, succeeded, failed, cancelled)."""
        return await self._run(operations.list_jobs(self._state, status, limit, self._deadline(deadline)))

    async def aclose(self) -> None:
        """Close the connections (not an `http` client given to the constructor)."""
        if self._owns_http:
            await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        await self.aclose()


class AsyncJob:
    """A training job: `await wait()` for it, `await cancel()` it; `record` is its state as last read."""

    def __init__(
        self, client: AsyncClient, job_id: str, *, idempotency_key: str | None = None, replayed: bool = False
    ) -> None:
        self.id = job_id
        self.idempotency_key = idempotency_key
        self.replayed = replayed
        """Whether the service answered with a job an earlier request with the same key had queued."""
        self.record: JobRecord | None = None
        self._client = client

    @property
    def status(self) -> str:
        """The status as last read (`queued` before the first read)."""
        return self.record.status if self.record is not None else "queued"

    async def refresh(self) -> JobRecord:
        """Read the job's state now."""
        client = self._client
        self.record = await client._run(operations.read_job(client._state, self.id, client._deadline(None)))
        return self.record

    async def wait(
        self,
        timeout: float | None = None,
        *,
        progress: Callable[[JobRecord], None] | None = None,
        poll_seconds: float = 1.0,
    ) -> JobRecord:
        """Wait until the job ends, calling `progress(record)` on each change; see `Job.wait`."""
        client = self._client
        self.record = await client._run(
            operations.wait_for_job(client._state, self.id, timeout, progress, poll_seconds)
        )
        return self.record

    async def cancel(self) -> JobRecord:
        """Cancel the job, queued or running; no partial version is kept."""
        client = self._client
        self.record = await client._run(operations.cancel_job(client._state, self.id, client._deadline(None)))
        return self.record

    def __repr__(self) -> str:
        return f"AsyncJob(id={self.id!r}, status={self.status!r})"


__all__ = ["AsyncClient", "AsyncJob"]
