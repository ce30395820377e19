"""The embedded mode's job runner: training processes started by the API process itself.

Used when no STOCKCAST_DATABASE_URL is set (`EmbeddedJobs`). `JobRunner` is
one asyncio task in the API process. It never trains: it claims the oldest
queued job, starts a training process for it (`app.jobs.training_process`),
watches its exit, and makes sure every job ends in a final state even when
the process crashes or the API restarts. See docs/design.md, "Training jobs".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import signal
from collections.abc import Awaitable, Callable
from datetime import datetime
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

from app.core import metrics
from app.core.config import Settings
from app.core.stores import model_store
from app.jobs.store import CANCELLED, FAILED, RUNNING, SUCCEEDED, JobOutcome, JobStore
from training.store import ModelStore

logger = logging.getLogger("stockcast.jobs")
# Called when a job's training process has exited; returns what the API now serves for its model.
FinishedCallback = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


def _is_training_process(pid: int) -> bool:
    """True if `pid` still runs a multiprocessing child (guards against pid reuse)."""
    with contextlib.suppress(OSError):
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        return b"multiprocessing" in cmdline
    return False


class JobRunner:
    """Schedules queued jobs onto training processes and reaps them."""

    def __init__(self, settings: Settings, jobs: JobStore, on_finished: FinishedCallback) -> None:
        self.settings = settings
        self.jobs = jobs
        self.on_finished = on_finished
        self.processes: dict[str, BaseProcess] = {}
        # Job id -> model name of each running training process.
        self.models: dict[str, str] = {}
        self._context = multiprocessing.get_context("spawn")
        # What each spawned training process runs (tests swap in a stub child that does not import TensorFlow).
        self.training_entry: Callable[[str, dict[str, Any], int], None] = _training_entry
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None

    def recover(self) -> list[str]:
        """Settle jobs that a previous API process left running (crash or kill -9)."""
        store = model_store(self.settings)
        store.remove_stale_temporaries()
        settled = []
        for job in self.jobs.list(status=RUNNING, limit=10_000):
            pid = job.get("pid")
            if pid and _is_training_process(pid):
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
            version = self._version_made_by(store, job)
            if version is not None:
                recovered = {"model": job["request"]["model"], "version": version, "recovered": True}
                self.jobs.finish(job["id"], JobOutcome(SUCCEEDED, result=recovered))
            else:
                error = (
                    "interrupted: the API process stopped while this job was running; no version was saved. "
                    "Submit it again."
                )
                self.jobs.finish(job["id"], JobOutcome(FAILED, error=error))
            settled.append(job["id"])
        return settled

    @staticmethod
    def _version_made_by(store: ModelStore, job: dict[str, Any]) -> int | None:
        """The version a job saved before its record could say so, if any."""
        name = job["request"].get("model", "")
        for metadata in store.iter_metadata(name):
            if metadata.get("data", {}).get("job_id") == job["id"]:
                return int(metadata["version"])
        return None

    def start(self) -> None:
        """Begin scheduling in the background."""
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.create_task(self._loop_forever(), name="job-runner")

    def wake(self) -> None:
        """Check for new work now rather than at the next poll; safe from any thread (routes run in a pool)."""
        if self._loop is None:
            return
        self._loop.call_soon_threadsafe(self._wake.set)

    async def stop(self) -> None:
        """Stop scheduling, end running training processes, and record why their jobs ended."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for job_id, process in list(self.processes.items()):
            process.kill()
            process.join(timeout=5)
            self.jobs.finish(
                job_id, JobOutcome(FAILED, error="interrupted: the API shut down while this job was running")
            )
        self.processes.clear()
        self.models.clear()

    async def _loop_forever(self) -> None:
        while True:
            try:
                await self._reap()
                await self._cancel_flagged()
                await self._launch()
            except Exception:  # the runner must survive a bad job record
                logger.exception("job runner iteration failed")
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self.settings.job_poll_seconds)

    # SQLite calls go to the thread pool (`asyncio.to_thread`): a write can
    # wait for a training process's transaction, and the event loop serves /predict.

    async def _launch(self) -> None:
        while len(self.processes) < self.settings.job_concurrency:
            # One job per model at a time, as procrastinate's lock does in
            # scaled-out mode: a model's jobs never race in the promotion gate.
            job = await asyncio.to_thread(self.jobs.next_queued, set(self.models.values()))
            if job is None:
                return
            # Started from the event-loop thread on purpose: PR_SET_PDEATHSIG
            # fires when the spawning *thread* exits, and this one lives as
            # long as the API.
            process = self._context.Process(
                target=self.training_entry,
                args=(job["id"], self.settings.model_dump(mode="json"), os.getpid()),
                name=f"stockcast-train-{job['id']}",
                daemon=True,
            )
            if not await asyncio.to_thread(self.jobs.mark_running, job["id"], 0):
                continue
            process.start()
            await asyncio.to_thread(self.jobs.set_pid, job["id"], process.pid)
            self.processes[job["id"]] = process
            self.models[job["id"]] = str(job["request"].get("model", ""))
            logger.info("job %s started in training process %s", job["id"], process.pid)

    async def _cancel_flagged(self) -> None:
        for job_id, process in list(self.processes.items()):
            if process.is_alive() and await asyncio.to_thread(self.jobs.cancel_requested, job_id):
                # The training process checks the flag every epoch; a kill is the fallback
                # for a job stuck in a long epoch. Nothing half-written becomes
                # visible: versions appear only by an atomic rename.
                process.kill()

    async def _reap(self) -> None:
        for job_id, process in list(self.processes.items()):
            if process.is_alive():
                continue
            process.join()
            del self.processes[job_id]
            self.models.pop(job_id, None)
            job = await asyncio.to_thread(self.jobs.get, job_id)
            if job is None or job["status"] != RUNNING:
                await asyncio.to_thread(self._observe, job_id)
                continue  # the training process recorded a failure or cancellation itself
            if job["result"] is not None and process.exitcode == 0:
                # Load the new version before saying "succeeded", so a client
                # that polls the job and then predicts gets the new version.
                serving = await self.on_finished(job)
                served = JobOutcome(SUCCEEDED, result={**job["result"], "serving": serving})
                await asyncio.to_thread(self.jobs.finish, job_id, served)
            elif job["cancel_requested"]:
                await asyncio.to_thread(self.jobs.finish, job_id, JobOutcome(CANCELLED, error="cancelled by request"))
            else:
                error = f"the training worker exited unexpectedly (exit code {process.exitcode})"
                await asyncio.to_thread(self.jobs.finish, job_id, JobOutcome(FAILED, error=error))
            logger.info("job %s ended", job_id)
            await asyncio.to_thread(self._observe, job_id)

    def _observe(self, job_id: str) -> None:
        """Count a finished job in the metrics: its duration and the gate's decision on its version."""
        job = self.jobs.get(job_id)
        if job is None or not metrics.ENABLED:
            return
        seconds = None
        if job.get("started_at") and job.get("finished_at"):
            started = datetime.fromisoformat(job["started_at"])
            seconds = (datetime.fromisoformat(job["finished_at"]) - started).total_seconds()
        result = job.get("result") or {}
        metrics.observe_job(job["status"], seconds, result.get("gate"))


def _training_entry(job_id: str, settings_values: dict[str, Any], parent_pid: int) -> None:
    """Imported by the spawned interpreter; kept tiny so the import is cheap."""
    from app.jobs.training_process import run_job

    run_job(job_id, settings_values, parent_pid)
