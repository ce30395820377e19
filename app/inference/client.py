"""The API's handle on the inference process, where every served network runs.

The networks live in a separate process so the API process never imports
TensorFlow and its event loop never waits for a GIL held by inference: it
parses requests, stacks batches and writes answers; the inference process
runs each version's whole forecast (`app/inference/steps.py` around the
compiled graph). Messages (`app/inference/messages.py`) travel in
length-prefixed frames over a socket pair owned by an asyncio transport, so
a batch costs one write and one read callback on the event loop. If the
process dies or stops answering, waiting calls fail with 503 and a new one
is started (with a doubling delay) and reloads every handle.
See docs/design.md, "Layout: which process runs what".
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import multiprocessing
import os
import socket
from dataclasses import dataclass
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any, cast

import numpy as np

from app.core.config import Settings, default
from app.inference.messages import (
    NO_CALL,
    Done,
    Drop,
    EngineReady,
    Failed,
    FrameError,
    FrameReader,
    Load,
    Ping,
    Predict,
    Request,
    Stop,
    decode_body,
    encode,
)
from app.inference.steps import interval_levels
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


@dataclass(frozen=True)
class InferenceTimeouts:
    """How long the API side waits on the inference process; each default is its setting's default."""

    # A batch unanswered this long gets the worker killed and restarted.
    call_seconds: float = default("inference_timeout_seconds")
    # A load unanswered this long does the same (never less than `call_seconds`).
    load_seconds: float = default("inference_load_timeout_seconds")
    # The first wait before a dead worker is restarted; it doubles while workers keep dying young.
    restart_delay_seconds: float = default("inference_restart_delay_seconds")
    # How long a stopping worker may take to exit before it is killed.
    stop_seconds: float = default("inference_stop_timeout_seconds")

    @classmethod
    def from_settings(cls, settings: Settings) -> InferenceTimeouts:
        """The timeouts the settings give (`STOCKCAST_INFERENCE_*`)."""
        return cls(
            call_seconds=settings.inference_timeout_seconds,
            load_seconds=settings.inference_load_timeout_seconds,
            restart_delay_seconds=settings.inference_restart_delay_seconds,
            stop_seconds=settings.inference_stop_timeout_seconds,
        )


class InferenceProcess:
    """Starts the inference process and talks to it from the event loop; see the module docstring."""

    def __init__(
        self,
        models_dir: Path,
        log_level: str = "info",
        timeouts: InferenceTimeouts | None = None,
        temp_dir: Path | None = None,
        xla: bool = True,
        engine: str = "auto",
    ) -> None:
        self.models_dir, self.log_level = models_dir, log_level
        # What runs the networks (setting `inference_engine`: "auto", "onnx" or "tensorflow").
        self.engine_setting = engine
        # Whether the process compiles each loaded version with XLA (setting `inference_xla`), and where
        # its temporary files go (TensorFlow's autograph modules; None: the system's).
        self.xla, self.temp_dir = xla, temp_dir
        self.timeouts = timeouts or InferenceTimeouts()
        # Loads wait for TensorFlow's import in a new worker, then trace and warm up.
        self.load_timeout_seconds = max(self.timeouts.load_seconds, self.timeouts.call_seconds)
        self._context = multiprocessing.get_context("spawn")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._process: BaseProcess | None = None
        self._link: _WorkerLink | None = None
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
        # The engine each loaded handle runs on, as the worker's load reply named it.
        self._engines: dict[int, str] = {}
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
        await self._spawn()
        self._watchdog = self._loop.create_task(self._watch(), name="inference-watchdog")

    async def _spawn(self) -> None:
        from app.inference.serve_loop import serve

        assert self._loop is not None
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            process = self._context.Process(
                target=serve,
                args=(
                    theirs,
                    str(self.models_dir),
                    os.getpid(),
                    self.log_level,
                    self.temp_dir,
                    self.xla,
                    self.engine_setting,
                ),
                name="stockcast-inference",
                daemon=True,
            )
            process.start()
        except BaseException:
            ours.close()
            raise
        finally:
            # Only the worker holds its end now, so its death reads as end-of-file here.
            theirs.close()
        link = _WorkerLink(self)
        await self._loop.create_unix_connection(lambda: link, sock=ours)
        self._process, self._link = process, link
        self._spawned_at = self._loop.time()
        logger.info("inference process started (pid %s)", process.pid)

    @property
    def pid(self) -> int | None:
        """The worker's process id, while one runs."""
        return self._process.pid if self._process is not None and self._link is not None else None

    def status(self) -> dict[str, Any]:
        """For /ready: the worker's pid (None while it restarts), restarts so far and why the last one died."""
        return {"pid": self.pid, "restarts": self.restarts, "last_exit": self.last_exit}

    def serving(self, handle: int) -> bool:
        """True while the running worker has this handle loaded."""
        return handle in self._ready

    async def answering(self, timeout: float) -> bool:
        """True if the worker answers a ping within `timeout` seconds (after every message sent before it)."""
        try:
            await asyncio.wait_for(self._call(Ping()), timeout)
        except (TimeoutError, StockcastError):
            return False
        return True

    async def stop(self) -> None:
        """Ask the worker to exit, and kill it if it has not within `timeouts.stop_seconds`."""
        timeout = self.timeouts.stop_seconds
        self._stopping = True
        for task in (self._restarter, self._watchdog):
            if task is not None:
                task.cancel()
        process, link = self._process, self._link
        if link is not None:
            # Closing the transport below still sends what it holds, this included.
            link.send(encode(NO_CALL, Stop()))
        self._disconnect(InferenceUnavailableError("the service is shutting down"))
        if process is not None:
            await asyncio.to_thread(process.join, timeout)
            if process.is_alive():
                process.kill()
                await asyncio.to_thread(process.join, timeout)
            self.last_exit = f"exit code {process.exitcode}"

    def _disconnect(self, error: StockcastError) -> None:
        """Forget the current worker and fail every call waiting on it."""
        if self._link is not None:
            self._link.detach()
            self._link = None
        self._ready.clear()
        self._xla.clear()
        self._engines.clear()
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
        delay = min(self.timeouts.restart_delay_seconds * 2 ** max(self._quick_deaths - 1, 0), 60.0)
        logger.error("inference process stopped (%s); restarting it in %.1f s", self.last_exit, delay)
        self._restarter = self._loop.create_task(self._restart(delay), name="inference-restart")

    def _kill(self, reason: str) -> None:
        """Kill the worker; its socket closes, and the link's end-of-file starts the restart."""
        process = self._process
        if process is None or self._link is None:
            return
        self._kill_reason = reason
        logger.error("inference process %s %s", process.pid, reason)
        with contextlib.suppress(OSError):
            process.kill()

    async def _watch(self) -> None:
        """Kill a worker that has left a call unanswered past its deadline; the restart follows."""
        assert self._loop is not None
        while True:
            await asyncio.sleep(min(1.0, self.timeouts.call_seconds / 4))
            first = min(self._deadlines.values(), default=None)
            if first is not None and self._loop.time() > first:
                self._kill("killed: a call went unanswered past its deadline")

    async def _restart(self, delay: float) -> None:
        await asyncio.sleep(delay)
        if self._stopping:
            return
        try:
            await self._spawn()
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

    def _call(self, message: Request) -> asyncio.Future[Any]:
        """Send one message; the future gets the reply (event-loop thread only).

        Raises InferenceUnavailableError while no worker runs, InferenceFailedError
        for a message that cannot be encoded: either way only this call fails.
        """
        link, loop = self._link, self._loop
        if link is None or loop is None:
            raise InferenceUnavailableError("the inference process is not running; retry shortly")
        call_id = next(self._ids)
        try:
            frame = encode(call_id, message)
        except Exception as error:
            raise InferenceFailedError(f"inference failed: the request could not be sent ({error})") from error
        timeout = self.load_timeout_seconds if isinstance(message, Load) else self.timeouts.call_seconds
        future = loop.create_future()
        self._calls[call_id] = future
        self._deadlines[call_id] = loop.time() + timeout
        link.send(frame)
        return future

    def _on_frame(self, call_id: int, body: bytes) -> None:
        """A whole reply from the worker: settle the call it answers."""
        future = self._calls.pop(call_id, None)
        self._deadlines.pop(call_id, None)
        try:
            message = decode_body(body)
        except Exception as error:
            message = Failed(f"the reply could not be read ({type(error).__name__}: {error})")
        if isinstance(message, EngineReady):
            if message.xla and message.handle in self._ready:
                self._xla.add(message.handle)
            return
        if future is None or future.done():
            return
        if isinstance(message, Done):
            future.set_result(message.value)
        elif isinstance(message, Failed) and message.broken:
            future.set_exception(BrokenVersionError(message.message))
        elif isinstance(message, Failed):
            future.set_exception(InferenceFailedError(f"inference failed: {message.message}"))
        else:
            future.set_exception(InferenceFailedError(f"inference failed: unexpected reply {message!r}"))

    async def load(self, name: str, version: int, max_batch_size: int) -> int:
        """Load a version in the worker; its handle. BrokenVersionError if it cannot be served."""
        handle = next(self._handles)
        await self._load_handle(handle, name, version, max_batch_size)
        self._loads[handle] = (name, version, max_batch_size)
        return handle

    async def _load_handle(self, handle: int, name: str, version: int, max_batch_size: int) -> None:
        engine = await self._call(Load(handle, name, version, max_batch_size))
        self._ready.add(handle)
        self._engines[handle] = str(engine)

    def predict(self, handle: int, windows: np.ndarray) -> asyncio.Future[np.ndarray]:
        """Forecasts and bounds (`ForecastSteps.finish`) for raw windows, as a future (event-loop thread only)."""
        if handle not in self._ready:
            raise InferenceUnavailableError("this model version is being reloaded by the inference process; retry")
        return self._call(Predict(handle, windows))

    async def drop(self, handle: int) -> None:
        """Unload a version from the worker."""
        self._loads.pop(handle, None)
        self._ready.discard(handle)
        self._xla.discard(handle)
        self._engines.pop(handle, None)
        if self._link is not None:
            with contextlib.suppress(StockcastError):
                await self._call(Drop(handle))

    def jit_compiled(self, handle: int) -> bool:
        """True once the worker serves this handle with the XLA-compiled graph."""
        return handle in self._xla

    def engine(self, handle: int) -> str | None:
        """What runs this handle's network in the worker: "onnx", "xla" or "tensorflow"; None while not loaded."""
        if handle in self._xla:
            return "xla"
        return self._engines.get(handle)


class _WorkerLink(asyncio.Protocol):
    """One worker's socket as the event loop sees it: whole frames out, whole frames in."""

    def __init__(self, owner: InferenceProcess) -> None:
        self.owner = owner
        self.reader = FrameReader()
        self.transport: asyncio.Transport | None = None
        # Set once the owner has let go of this worker: its late bytes and its end are no news.
        self.detached = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Keep the transport to write to."""
        # uvloop's transports quack like asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)

    def send(self, frame: bytes) -> None:
        """Queue one whole frame; the transport writes what the socket does not take at once later."""
        if self.transport is not None and not self.detached:
            self.transport.write(frame)

    def data_received(self, data: bytes) -> None:
        """Hand every frame completed by these bytes to the owner, in order."""
        if self.detached:
            return
        try:
            frames = self.reader.feed(data)
        except FrameError as error:
            # Nothing later on this stream can be trusted: a new worker starts clean.
            self.owner._kill(f"killed: {error}")
            return
        for call_id, body in frames:
            self.owner._on_frame(call_id, body)

    def connection_lost(self, exc: Exception | None) -> None:
        """The worker has gone (its end closed): unless it was let go on purpose, restart it."""
        if not self.detached:
            self.detached = True
            self.owner._on_worker_exit()

    def detach(self) -> None:
        """Let go of this worker: close the socket once what was queued has been written."""
        self.detached = True
        if self.transport is not None:
            self.transport.close()


class RemoteModel:
    """A served version as the API process holds it: its metadata, spec, scaler and interval levels here, the network
    and both numpy steps in the inference process."""

    def __init__(
        self, metadata: dict[str, Any], spec: WindowSpec, scaler: Scaler, process: InferenceProcess, handle: int
    ) -> None:
        self.metadata: dict[str, Any] = metadata
        self.name: str = str(metadata["name"])
        self.version: int = int(metadata["version"])
        self.spec: WindowSpec = spec
        self.scaler: Scaler = scaler
        self.interval_levels: tuple[str, ...] = interval_levels(metadata)
        """The levels whose bounds follow the forecast in each output, in order."""
        self.process = process
        self.handle = handle

    @property
    def jit_compiled(self) -> bool:
        """True once the worker runs this version's XLA-compiled graph."""
        return self.process.jit_compiled(self.handle)

    @property
    def engine(self) -> str | None:
        """What runs this version's network in the worker: "onnx", "xla" or "tensorflow"; None while reloading."""
        return self.process.engine(self.handle)

    def forecast_later(self, windows: np.ndarray) -> asyncio.Future[np.ndarray]:
        """Forecasts and bounds (`ForecastSteps.finish`) for raw windows, computed in the worker, as a future."""
        return self.process.predict(self.handle, windows)
