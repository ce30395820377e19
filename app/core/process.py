"""Start-up helpers shared by both kinds of child process: the inference process and training processes.

See docs/design.md, "Layout: which process runs what".
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path


def die_with_parent() -> None:
    """Ask Linux to SIGKILL this process when the process that spawned it dies."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL("libc.so.6", use_errno=True)
            pr_set_pdeathsig = 1
            libc.prctl(pr_set_pdeathsig, signal.SIGKILL)


def describe_error(error: BaseException) -> str:
    """A failure as a child process reports it: our own errors as they read, anything else with its type."""
    from training.errors import StockcastError

    if isinstance(error, StockcastError):
        return str(error)
    if isinstance(error, OSError) and error.strerror:
        # Without the file name: job errors are shown to clients, server paths are not theirs to see.
        return f"{type(error).__name__}: {error.strerror}"
    return f"{type(error).__name__}: {error}"


def name_process(name: str) -> None:
    """Set the name `ps`, `top` and /proc show for this process (Linux; at most 15 characters)."""
    with contextlib.suppress(OSError):
        Path("/proc/self/comm").write_text(name[:15])


def use_private_temp_dir(folder: Path) -> None:
    """Send this process's temporary files into `folder`, emptied first, instead of /tmp.

    TensorFlow's autograph writes each converted function as a
    `__autograph_generated_file*.py` in the temporary folder and deletes it
    at interpreter exit, which our child processes skip (`os._exit`), so
    each would leave files in /tmp. In the data folder they stay where the
    service keeps its files, and `remove_private_temp_dir` clears them when
    the process ends.
    """
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True, exist_ok=True)
    os.environ["TMPDIR"] = str(folder)
    tempfile.tempdir = str(folder)


def remove_private_temp_dir(folder: Path) -> None:
    """Delete the folder `use_private_temp_dir` set up (at the end of the process)."""
    shutil.rmtree(folder, ignore_errors=True)
