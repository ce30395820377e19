"""The messages between the API process and the inference process, and how they travel.

Both sides import this module and nothing else about the other (as
MLServer's `mlserver/parallel/messages.py`), so a message cannot mean one
thing when sent and another when received. One frame per message: a header
(payload length and call id, two big-endian uint64) then a pickled body.
The reader takes exactly `length` bytes however the stream was cut, so a
large message is never read out of step; the call id sits in the header, so
a body that cannot be unpickled fails only its own call.
See docs/design.md, "Serving path".
"""

from __future__ import annotations

import pickle
import socket
import struct
from dataclasses import dataclass
from typing import Any

HEADER = struct.Struct("!QQ")
# Far above any legal batch, far below what would exhaust
# memory: a length beyond it means a broken stream.
MAX_FRAME_BYTES = 1 << 30
# Call id of messages that answer no call (an engine report).
NO_CALL = 0


class FrameError(Exception):
    """The byte stream is not a sequence of frames: the connection cannot be used any more."""


# API process -> inference process -----------------------------------------------


@dataclass(frozen=True, slots=True)
class Load:
    """Load, warm up and compile one version under `handle`; answered with `Done(engine)` ("onnx", "tensorflow")."""

    handle: int
    name: str
    version: int
    max_batch_size: int


@dataclass(frozen=True, slots=True)
class Predict:
    """Forecasts and interval bounds (`ForecastSteps.finish`) for a batch of raw windows (n, window, features)."""

    handle: int
    windows: Any


@dataclass(frozen=True, slots=True)
class Drop:
    """Unload the version held under `handle`."""

    handle: int


@dataclass(frozen=True, slots=True)
class Ping:
    """Answered with `Done(None)` once every message sent before it has been handled (readiness)."""


@dataclass(frozen=True, slots=True)
class Stop:
    """Exit now."""


# Inference process -> API process -----------------------------------------------


@dataclass(frozen=True, slots=True)
class Done:
    """The call succeeded; `value` is its result."""

    value: Any


@dataclass(frozen=True, slots=True)
class Failed:
    """The call failed; `broken` says the version itself cannot be served (else the one call failed)."""

    message: str
    broken: bool = False


@dataclass(frozen=True, slots=True)
class EngineReady:
    """The TensorFlow version under `handle` finished its XLA compilation (`xla` False if it kept the graph)."""

    handle: int
    xla: bool


Request = Load | Predict | Drop | Ping | Stop
Reply = Done | Failed | EngineReady


def encode(call_id: int, message: Request | Reply) -> bytes:
    """One whole frame: header and pickled body (pickling errors are raised here, before anything is sent)."""
    body = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    if len(body) > MAX_FRAME_BYTES:
        raise ValueError(f"message of {len(body)} bytes is over the {MAX_FRAME_BYTES}-byte frame limit")
    return HEADER.pack(len(body), call_id) + body


def decode_body(body: bytes | bytearray | memoryview) -> Any:
    """The message in a frame's body."""
    return pickle.loads(body)


class FrameReader:
    """Reassembles frames from chunks of a byte stream, however the chunks were cut (the API side)."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        """Add received bytes; the (call id, body) of every frame now complete, in order."""
        buffer = self._buffer
        buffer += data
        frames: list[tuple[int, bytes]] = []
        start = 0
        while len(buffer) - start >= HEADER.size:
            length, call_id = HEADER.unpack_from(buffer, start)
            if length > MAX_FRAME_BYTES:
                raise FrameError(f"frame of {length} bytes announced: the stream is out of step")
            end = start + HEADER.size + length
            if len(buffer) < end:
                break
            frames.append((call_id, bytes(buffer[start + HEADER.size : end])))
            start = end
        if start:
            del buffer[:start]
        return frames


def send_frame(sock: socket.socket, call_id: int, message: Request | Reply) -> None:
    """Write one whole frame on a blocking socket (the inference process side; callers serialise writers)."""
    sock.sendall(encode(call_id, message))


def _read_exactly(sock: socket.socket, size: int) -> bytearray:
    buffer = bytearray(size)
    view = memoryview(buffer)
    received = 0
    while received < size:
        count = sock.recv_into(view[received:])
        if count == 0:
            raise EOFError("the other process closed the connection")
        received += count
    return buffer


def receive_frame(sock: socket.socket) -> tuple[int, bytearray]:
    """Read one whole frame from a blocking socket: (call id, body). EOFError when the peer has gone."""
    length, call_id = HEADER.unpack(_read_exactly(sock, HEADER.size))
    if length > MAX_FRAME_BYTES:
        raise FrameError(f"frame of {length} bytes announced: the stream is out of step")
    return call_id, _read_exactly(sock, length)
