"""The API's handle on the inference process, where every served network runs.

Why a process and not a thread: a thread shares the API's GIL. Each batch a
TensorFlow call spends a few hundred microseconds in Python (argument
handling, output conversion), and the event loop waited for the GIL every
time, while TensorFlow's own threads competed with it for the two cores
(`bench/gil_handoff.py` measures the hand-over). With the networks in a
separate process the API process never imports TensorFlow: its event loop
parses requests, scales batches, turns outputs into prices and writes
answers, and the inference process runs the compiled graphs. The same split
is BentoML's runners and Triton's Python backend.

Protocol: pickled tuples over a socket pair (`multiprocessing.Pipe`).

- API to worker: `(op, call_id, *args)` with op `load` (handle, name,
  version, max batch size), `predict` (handle, scaled float32 batch),
  `drop` (handle) or `stop`.
- Worker to API: `("ok", call_id, value)`, `("error", call_id, kind,
  message)`, and `("engine", 0, handle, xla)` once a version's XLA
  compilation has finished.

Everything on the API side runs on its event loop: replies are read when
the socket is readable (`loop.add_reader`), so a batch costs one send and
one receive and no thread hand-over. A handle names one load, so two loads
of the same version (a default and a pinned copy) never share one.

If the worker dies (killed, out of memory), every waiting call fails with
503, and a new worker is started and reloads every handle; predictions for
a handle fail with 503 until it is back, and /ready says 503 meanwhile. A
worker that stops answering (a batch unanswered for `call_timeout_seconds`,
a load for `load_timeout_seconds`) is killed and restarted the same way. A worker that keeps dying is restarted
after a delay that doubles each time, up to a minute.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import multiprocessing
import os
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

import numpy as np

from app.core.config import default
from app.serving.steps import ForecastSteps
from training.errors import BrokenVersionError, StockcastError
from training.features import Scaler, WindowSpec

logger = logging.getLogger("stockcast.inference")


class InferenceUnavailableError(StockcastError):
    """The inference process is not running (stopped, or restarting after it died)."""

    # Transient: a retry reaches the restarted process.
    status_code = 503


class InferenceFailedError(StockcastError):
    """The inference process could not run a batch."""

    status_code = 500


class InferenceProcess:
    """Starts the inference process and talks to it from the event loop; see the module docstring."""

    def __init__(
        self,
        models_dir: Path,
        log_level: str = "info",
        restart_delay_seconds: float = default("inference_restart_delay_seconds"),
        call_timeout_seconds: float = default("inference_timeout_seconds"),
        load_timeout_seconds: float = default("inference_load_timeout_seconds"),
        stop_timeout_seconds: float = default("inference_stop_timeout_seconds"),
    ) -> None:
        self.models_dir = models_dir
        self.log_level = log_level
        self.restart_delay_seconds = restart_delay_seconds
        self.call_timeout_seconds = call_timeout_seconds
        self.stop_timeout_seconds = stop_timeout_seconds
        # Loads wait for TensorFlow's import in a new worker, then trace and warm up.
        self.load_timeout_seconds = max(load_timeout_seconds, call_timeout_seconds)
        self._context = multiprocessing.get_context("spawn")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._process: BaseProcess | None = None
        self._conn: Connection | None = None
        self._calls: dict[int, asyncio.Future[Any]] = {}
        # By when each waiting call must be answered (loop time), for the watchdog.
        self._deadlines: dict[int, float] = {}
        self._ids = itertools.count(1)
        self._handles = itertools.count(1)
        # handle -> load arguments: what a restarted worker must load again.
        self._loads: dict[int, tuple[str, int, int]] = {}
        # Handles the running worker has loaded and can predict with.
        self._ready: set[int] = set()
        self._xla: set[int] = set()
        self._restarter: asyncio.Task[None] | None = None
        self._watchdog: asyncio.Task[None] | None = None
        self._stopping = False
        self._spawned_at = 0.0
        # Deaths in a row of workers that lived less than a minute: the backoff.
        self._quick_deaths = 0
        self.restarts = 0
        # Why the last worker stopped (kept for /ready); why the watchdog killed one.
        self.last_exit: str | None = None
        self._kill_reason: str | None = None

    # Life cycle ---------------------------------------------------------------

    async def start(self) -> None:
        """Start the worker (it imports TensorFlow in the background; loads queue until it is up)."""
        self._loop = asyncio.get_running_loop()
        self._stopping = False
        self._spawn()
        self._watchdog = self._loop.create_task(self._watch(), name="inference-watchdog")

    def _spawn(self) -> None:
        from app.inference.worker import serve

        assert self._loop is not None
        ours, theirs = self._context.Pipe(duplex=True)
        process = self._context.Process(
            target=serve,
            args=(theirs, str(self.models_dir), os.getpid(), self.log_level),
            name="stockcast-inference",
            daemon=True,
        )
        process.start()
        # Only the worker holds its end now, so its death reads as end-of-file here.
        theirs.close()
        self._process, self._conn = process, ours
        self._spawned_at = self._loop.time()
        self._loop.add_reader(ours.fileno(), self._on_readable)
        logger.info("inference process started (pid %s)", process.pid)

    @property
    def pid(self) -> int | None:
        """The worker's process id, while one runs."""
        return self._process.pid if self._process is not None and self._conn is not None else None

    def status(self) -> dict[str, Any]:
        """For /ready: the worker's pid (None while it restarts), restarts so far and why the last one died."""
        return {"pid": self.pid, "restarts": self.restarts, "last_exit": self.last_exit}

    def serving(self, handle: int) -> bool:
        """True while the running worker has this handle loaded."""
        return handle in self._ready

    async def stop(self) -> None:
        """Ask the worker to exit, and kill it if it has not within `stop_timeout_seconds`."""
        timeout = self.stop_timeout_seconds
        self._stopping = True
        for task in (self._restarter, self._watchdog):
            if task is not None:
                task.cancel()
        process, conn = self._process, self._conn
        if conn is not None:
            with contextlib.suppress(OSError, ValueError):
                conn.send(("stop", 0))
        self._disconnect(InferenceUnavailableError("the service is shutting down"))
        if process is not None:
            await asyncio.to_thread(process.join, timeout)
            if process.is_alive():
                process.kill()
                await asyncio.to_thread(process.join, timeout)
            self.last_exit = f"exit code {process.exitcode}"

    def _disconnect(self, error: StockcastError) -> None:
        """Forget the current worker and fail every call waiting on it."""
        if self._conn is not None:
            assert self._loop is not None
            self._loop.remove_reader(self._conn.fileno())
            self._conn.close()
            self._conn = None
        self._ready.clear()
        self._xla.clear()
        self._deadlines.clear()
        calls, self._calls = self._calls, {}
        for future in calls.values():
            if not future.done():
                future.set_exception(error)

    def _on_worker_exit(self) -> None:
        process = self._process
        exit_code = process.exitcode if process is not None else None
        if process is not None and exit_code is None:
            process.join(0.5)
            exit_code = process.exitcode
        self.last_exit, self._kill_reason = self._kill_reason or f"exit code {exit_code}", None
        self._disconnect(
            InferenceUnavailableError(
                f"the inference process stopped ({self.last_exit}); it is restarting, retry shortly"
            )
        )
        if self._stopping:
            return
        assert self._loop is not None
        lived = self._loop.time() - self._spawned_at
        self._quick_deaths = self._quick_deaths + 1 if lived < 60 else 0
        delay = min(self.restart_delay_seconds * 2 ** max(self._quick_deaths - 1, 0), 60.0)
        logger.error("inference process stopped (%s); restarting it in %.1f s", self.last_exit, delay)
        self._restarter = self._loop.create_task(self._restart(delay), name="inference-restart")

    async def _watch(self) -> None:
        """Kill a worker that has left a call unanswered past its deadline; the restart follows."""
        assert self._loop is not None
        while True:
            await asyncio.sleep(min(1.0, self.call_timeout_seconds / 4))
            first = min(self._deadlines.values(), default=None)
            process = self._process
            if first is None or process is None or self._conn is None:
                continue
            if self._loop.time() > first:
                self._kill_reason = "killed: a call went unanswered past its deadline"
                logger.error("inference process %s is not answering; killing it", process.pid)
                with contextlib.suppress(OSError):
                    process.kill()
                # Its socket closes now, and the reader takes it from there.

    async def _restart(self, delay: float) -> None:
        await asyncio.sleep(delay)
        if self._stopping:
            return
        try:
            self._spawn()
        except OSError as error:
            # Out of processes or memory for now: try again later, not never.
            later = min(delay * 2, 60.0)
            logger.error("inference process not started (%s); trying again in %.1f s", error, later)
            assert self._loop is not None
            self._restarter = self._loop.create_task(self._restart(later), name="inference-restart")
            return
        self.restarts += 1
        for handle, (name, version, max_batch_size) in list(self._loads.items()):
            try:
                await self._load_handle(handle, name, version, max_batch_size)
            except StockcastError as error:
                logger.error("%s v%s not reloaded after the restart: %s", name, version, error)

    # Calls --------------------------------------------------------------------

    def _call(self, op: str, *args: Any) -> asyncio.Future[Any]:
        """Send one message; the future gets the reply (event-loop thread only)."""
        timeout = self.load_timeout_seconds if op == "load" else self.call_timeout_seconds
        if self._conn is None or self._loop is None:
            raise InferenceUnavailableError("the inference process is not running; retry shortly")
        call_id = next(self._ids)
        future = self._loop.create_future()
        self._calls[call_id] = future
        self._deadlines[call_id] = self._loop.time() + timeout
        try:
            self._conn.send((op, call_id, *args))
        except (OSError, ValueError) as error:
            self._calls.pop(call_id, None)
            self._deadlines.pop(call_id, None)
            raise InferenceUnavailableError(f"the inference process cannot be reached: {error}") from error
        return future

    def _on_readable(self) -> None:
        # One message per call: the loop calls again while the socket stays
        # readable, and `Connection.poll` would build a selector every time.
        if self._conn is None:
            return
        try:
            message = self._conn.recv()
        except (EOFError, OSError):
            self._on_worker_exit()
            return
        self._on_message(message)

    def _on_message(self, message: tuple[Any, ...]) -> None:
        kind, call_id, *rest = message
        if kind == "engine":
            handle, xla = rest
            if xla and handle in self._ready:
                self._xla.add(handle)
            return
        future = self._calls.pop(call_id, None)
        self._deadlines.pop(call_id, None)
        if future is None or future.done():
            return
        if kind == "ok":
            future.set_result(rest[0])
        elif rest[0] == "broken":
            future.set_exception(BrokenVersionError(rest[1]))
        else:
            future.set_exception(InferenceFailedError(f"inference failed: {rest[1]}"))

    async def load(self, name: str, version: int, max_batch_size: int) -> int:
        """Load a version in the worker; its handle. BrokenVersionError if it cannot be served."""
        handle = next(self._handles)
        await self._load_handle(handle, name, version, max_batch_size)
        self._loads[handle] = (name, version, max_batch_size)
        return handle

    async def _load_handle(self, handle: int, name: str, version: int, max_batch_size: int) -> None:
        await self._call("load", handle, name, version, max_batch_size)
        self._ready.add(handle)

    def predict(self, handle: int, scaled: np.ndarray) -> asyncio.Future[np.ndarray]:
        """Network outputs for a scaled batch, as a future (event-loop thread only)."""
        if handle not in self._ready:
            raise InferenceUnavailableError("this model version is being reloaded by the inference process; retry")
        return self._call("predict", handle, scaled)

    async def drop(self, handle: int) -> None:
        """Unload a version from the worker."""
        self._loads.pop(handle, None)
        self._ready.discard(handle)
        self._xla.discard(handle)
        if self._conn is not None:
            with contextlib.suppress(StockcastError):
                await self._call("drop", handle)

    def jit_compiled(self, handle: int) -> bool:
        """True once the worker serves this handle with the XLA-compiled graph."""
        return handle in self._xla


class RemoteModel(ForecastSteps):
    """A served version as the API process holds it: numpy steps here, the network in the worker."""

    def __init__(
        self, metadata: dict[str, Any], spec: WindowSpec, scaler: Scaler, process: InferenceProcess, handle: int
    ) -> None:
        super().__init__(metadata, spec, scaler)
        self.process = process
        self.handle = handle

    @property
    def jit_compiled(self) -> bool:
        """True once the worker runs this version's XLA-compiled graph."""
        return self.process.jit_compiled(self.handle)

    def predict_scaled(self, scaled: np.ndarray) -> asyncio.Future[np.ndarray]:
        """Network outputs (n, horizon) for a scaled batch, computed in the worker."""
        return self.process.predict(self.handle, scaled)
