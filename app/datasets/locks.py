"""One change at a time per dataset: a file lock, and a lock the deployment shares across machines.

Every change to a dataset (an upload, an append, a report repair) holds
`file_lock` on `<datasets_dir>/.<name>.lock` from reading to the last
write: it serialises threads and processes on one machine (the API, the
`python -m app datasets` command). A `SharedLock` is taken around it where
replicas on other machines write the same folder; the store only knows it
as a callable (scaled-out mode passes a PostgreSQL advisory lock,
`app.jobs.backend.JobBackend.shared_lock`). See docs/design.md, "Appending rows".
"""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

# Holds the lock named by its argument until the block ends.
SharedLock = Callable[[str], AbstractContextManager[object]]


def no_shared_lock(name: str) -> AbstractContextManager[object]:
    """One machine: the file lock is all there is to take."""
    return contextlib.nullcontext()


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive `flock` on `path` (created if absent) until the block ends.

    flock locks an open file description, so two threads of one process
    that each open the file exclude each other too; the kernel drops the
    lock when the holder dies, so a crash never leaves a dataset locked.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
