"""The inference process: the only process of the service that runs the networks.

`serve` is the target the API process spawns (`app/inference/client.py`). It
answers the messages of `app/inference/messages.py` on one socket: batches of
raw windows in, forecasts and interval bounds out; scaling, the network and
the conversion to prices all run here. Messages are handled in arrival order
on the main thread, except loads: a load opens (ONNX Runtime) or traces,
warms up and XLA-compiles (TensorFlow) a version, so it runs on a thread of
its own while loaded versions keep answering. A version with a checked
`model.onnx` runs on ONNX Runtime unless the setting `inference_engine` says
otherwise; TensorFlow is imported only when a version needs it.
See docs/design.md, "Serving path".
"""

from __future__ import annotations

import importlib.util
import logging
import os
import pickle
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

from app.core.process import (
    describe_error,
    die_with_parent,
    name_process,
    remove_private_temp_dir,
    use_private_temp_dir,
)
from app.inference import messages
from training.errors import BrokenVersionError

logger = logging.getLogger("stockcast.inference")
# What `ps` shows for the inference process.
INFERENCE_PROCESS_NAME = "stockcast-infer"
# Versions on ONNX Runtime leave few long-lived objects, so a burst of their loads (hundreds at
# start-up) settles the heap at most this often: a full collection after each load made every
# load slower than the one before it.
ONNX_SETTLE_INTERVAL_SECONDS = 1.0


class _ServeLoop:
    """The loaded versions, by handle, and the one socket to the API process."""

    def __init__(self, sock: socket.socket, models_dir: Path, xla: bool = True, engine: str = "auto") -> None:
        from training.store import ModelStore

        # Blocking on purpose: `sendall` returns once the whole frame is written.
        sock.setblocking(True)
        self.sock = sock
        self.store = ModelStore(models_dir)
        self.engines: dict[int, Any] = {}
        self.xla = xla
        # Setting `inference_engine`: "auto", "onnx" or "tensorflow".
        self.engine = engine
        # Loader threads answer too; a frame must go out whole before the next one starts.
        self._send_lock = threading.Lock()
        self._settled_at = float("-inf")

    def reply(self, call_id: int, message: messages.Reply) -> None:
        """Send one reply; one that cannot be encoded is replaced by a failure of that call."""
        try:
            with self._send_lock:
                messages.send_frame(self.sock, call_id, message)
        except (pickle.PicklingError, TypeError, ValueError, AttributeError) as error:
            with self._send_lock:
                messages.send_frame(
                    self.sock, call_id, messages.Failed(f"the reply could not be sent: {describe_error(error)}")
                )

    def load(self, call_id: int, request: messages.Load) -> None:
        """Load, warm up and check one version; the reply names its engine, or says why it failed."""
        from app.core.runtime import settle_heap

        try:
            compiled = self._open(request)
        except Exception as error:
            self.reply(call_id, messages.Failed(describe_error(error), broken=True))
            return
        self.engines[request.handle] = compiled
        # Long-lived objects (TensorFlow's graphs, the sessions) out of the
        # collector's reach, so a full collection does not stall inference.
        now = time.monotonic()
        if compiled.engine != "onnx" or now - self._settled_at >= ONNX_SETTLE_INTERVAL_SECONDS:
            settle_heap()
            self._settled_at = now
        self.reply(call_id, messages.Done(compiled.engine))
        compiled.wait_for_compilation()
        if request.handle in self.engines and compiled.engine != "onnx":
            self.reply(messages.NO_CALL, messages.EngineReady(request.handle, compiled.jit_compiled))

    def _open(self, request: messages.Load) -> Any:
        """The version on ONNX Runtime when it has a checked export and the setting allows; else on TensorFlow."""
        from training.artifact import checked_onnx_path, load_preprocessing

        metadata, spec, scaler = load_preprocessing(self.store, request.name, request.version)
        if self.engine != "tensorflow":
            # The Keras file is checked even when ONNX serves: a damaged version is refused whichever engine runs it.
            self.store.verified_model_path(request.name, request.version, metadata)
            try:
                path = checked_onnx_path(self.store, request.name, request.version, metadata)
                if path is None:
                    reason = (metadata.get("onnx") or {}).get("reason") or "trained before ONNX exports"
                    raise BrokenVersionError(f"{request.name} v{request.version} has no checked model.onnx ({reason})")
                from app.inference.onnx_engine import OnnxModel

                return OnnxModel(metadata, spec, scaler, path, request.max_batch_size)
            except BrokenVersionError as error:
                if self.engine == "onnx":
                    raise BrokenVersionError(f"{error}; inference_engine=onnx serves nothing else") from None
                if importlib.util.find_spec("keras") is None:
                    raise BrokenVersionError(
                        f"{error}; TensorFlow is not installed here (a serve-only install): "
                        "`python -m app export-onnx` where it is gives the version one"
                    ) from None
                logger.info("%s; served by TensorFlow", error)
        from app.inference.engine import CompiledModel
        from training.artifact import load_version

        version = load_version(self.store, request.name, request.version)
        return CompiledModel(version, max_batch_size=request.max_batch_size, jit_compile=self.xla)

    def predict(self, call_id: int, request: messages.Predict) -> None:
        """Run one batch and answer with the outputs, or with why this batch failed."""
        engine = self.engines.get(request.handle)
        if engine is None:
            self.reply(call_id, messages.Failed(f"no loaded version has handle {request.handle}"))
            return
        try:
            outputs = engine.forecast(request.windows)
        except Exception as error:
            self.reply(call_id, messages.Failed(describe_error(error)))
        else:
            self.reply(call_id, messages.Done(outputs))

    def run(self) -> None:
        """Answer messages until the API process says stop or goes away."""
        while True:
            try:
                call_id, body = messages.receive_frame(self.sock)
            except (EOFError, OSError, messages.FrameError):
                return
            try:
                message = messages.decode_body(body)
            except Exception as error:
                # The frame was whole, so the stream is still in step: only this call fails.
                self.reply(call_id, messages.Failed(f"the request could not be read: {describe_error(error)}"))
                continue
            if isinstance(message, messages.Predict):
                self.predict(call_id, message)
            elif isinstance(message, messages.Load):
                threading.Thread(target=self.load, args=(call_id, message), name="load", daemon=True).start()
            elif isinstance(message, messages.Drop):
                self.engines.pop(message.handle, None)
                self.reply(call_id, messages.Done(None))
            elif isinstance(message, messages.Ping):
                self.reply(call_id, messages.Done(None))
            elif isinstance(message, messages.Stop):
                return
            else:
                self.reply(call_id, messages.Failed(f"unknown request {type(message).__name__}"))


def serve(
    sock: socket.socket,
    models_dir: str,
    parent_pid: int,
    log_level: str = "info",
    temp_dir: Path | None = None,
    xla: bool = True,
    engine: str = "auto",
) -> None:
    """Run the inference process on `sock` (the target of the spawned process)."""
    die_with_parent()
    name_process(INFERENCE_PROCESS_NAME)
    if os.getppid() != parent_pid:
        # The API died between spawning us and the prctl call above.
        return
    if temp_dir is not None:
        use_private_temp_dir(temp_dir)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logging.basicConfig(level=log_level.upper(), format="%(levelname)s:     %(name)s: %(message)s")
    from app.core.runtime import tune_for_serving

    # Loader and XLA-compiler threads share the GIL with the main thread.
    tune_for_serving()
    _ServeLoop(sock, Path(models_dir), xla, engine).run()
    # Leave at once: a loader thread may still be inside XLA's compiler, and
    # the interpreter's normal exit would run C++ static destructors under it
    # and crash the process. Nothing here needs saving.
    if temp_dir is not None:
        remove_private_temp_dir(temp_dir)
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
