"""Entry point of the inference process: the only process of the service that runs TensorFlow.

The API process sends it scaled batches and gets network outputs back (see
`app/inference/client.py` for why and for the protocol). Messages are
handled in arrival order on the main thread, except loads: a load traces,
warms up and XLA-compiles a version for seconds, so it runs on a thread of
its own while the versions already loaded keep answering.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from app.core.process import describe_error, die_with_parent, name_process

logger = logging.getLogger("stockcast.inference")
# What `ps` shows for the inference process.
INFERENCE_PROCESS_NAME = "stockcast-infer"


class _Worker:
    """The loaded versions, by handle, and the one connection to the API process."""

    def __init__(self, conn: Connection, models_dir: Path) -> None:
        from training.store import ModelStore

        self.conn = conn
        self.store = ModelStore(models_dir)
        self.engines: dict[int, Any] = {}
        # Loader threads answer too; a message must go out whole.
        self._send_lock = threading.Lock()

    def reply(self, message: tuple[Any, ...]) -> None:
        with self._send_lock:
            self.conn.send(message)

    def load(self, call_id: int, handle: int, name: str, version: int, max_batch_size: int) -> None:
        """Load, warm up and check one version; the reply carries its warm-up time or why it failed."""
        from app.core.runtime import settle_heap
        from app.inference.engine import CompiledModel
        from training.artifact import load_version

        try:
            compiled = CompiledModel(load_version(self.store, name, version), max_batch_size=max_batch_size)
        except Exception as error:
            self.reply(("error", call_id, "broken", describe_error(error)))
            return
        self.engines[handle] = compiled
        # TensorFlow's long-lived objects out of the collector's reach: a full
        # collection would otherwise stall inference for ~250 ms.
        settle_heap()
        self.reply(("ok", call_id, {"warmup_seconds": compiled.warmup_seconds}))
        compiled.wait_for_compilation()
        if handle in self.engines:
            self.reply(("engine", 0, handle, compiled.jit_compiled))

    def predict(self, call_id: int, handle: int, scaled: Any) -> None:
        try:
            outputs = self.engines[handle].predict_scaled(scaled)
        except KeyError:
            self.reply(("error", call_id, "failed", f"no loaded version has handle {handle}"))
        except Exception as error:
            self.reply(("error", call_id, "failed", describe_error(error)))
        else:
            self.reply(("ok", call_id, outputs))

    def run(self) -> None:
        """Answer messages until the API process says stop or goes away."""
        while True:
            try:
                op, call_id, *args = self.conn.recv()
            except (EOFError, OSError):
                return
            if op == "predict":
                self.predict(call_id, *args)
            elif op == "load":
                threading.Thread(target=self.load, args=(call_id, *args), name="load", daemon=True).start()
            elif op == "drop":
                self.engines.pop(args[0], None)
                self.reply(("ok", call_id, None))
            elif op == "stop":
                return
            else:
                self.reply(("error", call_id, "failed", f"unknown operation {op!r}"))


def serve(conn: Connection, models_dir: str, parent_pid: int, log_level: str = "info") -> None:
    """Run the inference process on `conn` (the target of the spawned process)."""
    die_with_parent()
    name_process(INFERENCE_PROCESS_NAME)
    if os.getppid() != parent_pid:
        # The API died between spawning us and the prctl call above.
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logging.basicConfig(level=log_level.upper(), format="%(levelname)s:     %(name)s: %(message)s")
    from app.core.runtime import tune_for_serving

    # Loader and XLA-compiler threads share the GIL with the main thread.
    tune_for_serving()
    _Worker(conn, Path(models_dir)).run()
    # Leave at once. A loader thread may still be inside XLA's compiler, and
    # the interpreter's normal exit runs C++ static destructors under it: the
    # worker aborted or crashed when the service stopped during a compilation
    # (tests/app/inference/test_client.py). Nothing here needs saving.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
