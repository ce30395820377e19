"""A stub training child for queue, limit, auth and cancel tests: a spawned process that never imports TensorFlow.

Set it on an app's runner (`use_stub_training(client)`); each job it runs
then does what its model's name says: a model named `fail...` fails at once
with `STUB_FAILURE`; any other model waits until the job is cancelled (and
records it cancelled, as the real child does between epochs) or until
`STUB_WAIT_SECONDS` pass (then it fails). Jobs that must train a real
version keep the real child.
"""

from __future__ import annotations

import time
from typing import Any

STUB_FAILURE = "stub training failed on request"
STUB_WAIT_SECONDS = 120.0


def stub_training(job_id: str, settings_values: dict[str, Any], parent_pid: int) -> None:
    """The spawned child's target, with the real one's arguments; imports only the job records."""
    from app.core.config import Settings
    from app.core.process import die_with_parent
    from app.jobs.store import CANCELLED, FAILED, RUNNING, JobOutcome, JobStore

    die_with_parent()
    jobs = JobStore(Settings(**settings_values).jobs_db)
    job = jobs.get(job_id)
    if job is None or job["status"] != RUNNING:
        return
    if str(job["request"].get("model", "")).startswith("fail"):
        jobs.finish(job_id, JobOutcome(FAILED, error=STUB_FAILURE))
        return
    deadline = time.monotonic() + STUB_WAIT_SECONDS
    while time.monotonic() < deadline:
        if jobs.cancel_requested(job_id):
            jobs.finish(job_id, JobOutcome(CANCELLED, error="cancelled by request before the model was saved"))
            return
        time.sleep(0.1)
    jobs.finish(job_id, JobOutcome(FAILED, error=f"stub training waited {STUB_WAIT_SECONDS:g} s for a command"))


def use_stub_training(client: Any) -> None:
    """Make a started TestClient's job runner spawn `stub_training` instead of the real training child."""
    client.app.state.jobs.runner.training_entry = stub_training
