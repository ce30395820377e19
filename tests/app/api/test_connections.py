"""Connection limits on a real uvicorn server: oversize headers, slow headers, slow bodies, too many at once.

The server runs uvicorn with the protocol class `python -m app` gives it,
in front of a trivial ASGI app (the limits act before any app code), on a
loopback port; clients are raw sockets, so they can misbehave on purpose.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn

from app.__main__ import server_options
from app.api.connections import ConnectionLimits, GuardedHttpToolsProtocol, guarded_protocol
from app.core.config import Settings
from tests.helpers import free_port

LIMITS = ConnectionLimits(max_header_bytes=4096, header_timeout=1.0, body_timeout=1.0)


async def echo_length(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Answers with the number of body bytes it read; `disconnected` if the client went away first."""
    if scope["type"] != "http":
        return
    size, more = 0, True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            DISCONNECTS.append(scope["path"])
            return
        size += len(message.get("body", b""))
        more = message.get("more_body", False)
    body = str(size).encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"%d" % len(body))]})
    await send({"type": "http.response.body", "body": body})


DISCONNECTS: list[str] = []


@pytest.fixture(scope="module")
def port() -> Iterator[int]:
    """A real uvicorn server with the guarded protocol and a concurrency limit of 4."""
    port = free_port()
    config = uvicorn.Config(
        echo_length, host="127.0.0.1", port=port, http=guarded_protocol(LIMITS), limit_concurrency=4, log_level="error"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.02)
    yield port
    server.should_exit = True
    thread.join(10)


def connect(port: int) -> socket.socket:
    connection = socket.create_connection(("127.0.0.1", port), timeout=10)
    return connection


def answer(connection: socket.socket) -> bytes:
    """Everything the server sends until it closes or stops sending for the socket's timeout."""
    chunks = []
    with contextlib.suppress(TimeoutError, ConnectionResetError):
        while chunk := connection.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_a_normal_request_is_answered(port: int) -> None:
    with connect(port) as connection:
        connection.sendall(
            b"POST /x HTTP/1.1\r\nhost: localhost\r\ncontent-length: 5\r\nconnection: close\r\n\r\nhello"
        )
        reply = answer(connection)
    assert reply.startswith(b"HTTP/1.1 200 ") and reply.endswith(b"\r\n\r\n5")


def test_oversize_headers_get_431_before_the_app(port: int) -> None:
    # Finding 9: a 64 MiB header got 200; eight unfinished ones held 570 MiB.
    with connect(port) as connection:
        connection.sendall(b"GET /x HTTP/1.1\r\nhost: localhost\r\nx-big: ")
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            for _ in range(64):
                connection.sendall(b"a" * 1024)
        reply = answer(connection)
    assert reply.startswith(b"HTTP/1.1 431 ")
    assert reply.endswith(b'{"detail":"request headers are larger than the 4096 byte limit"}')


def test_oversize_headers_sent_at_once_with_their_body_get_431(port: int) -> None:
    with connect(port) as connection:
        head = b"POST /x HTTP/1.1\r\nhost: localhost\r\ncontent-length: 2\r\nx-big: " + b"a" * 8192 + b"\r\n\r\nhi"
        connection.sendall(head)
        reply = answer(connection)
    assert reply.startswith(b"HTTP/1.1 431 ")


def test_headers_that_trickle_in_get_408_and_the_connection_closes(port: int) -> None:
    # Finding 9: none of 70 slow connections was closed in 60 s.
    with connect(port) as connection:
        connection.sendall(b"GET /x HTTP/1.1\r\nhost: local")
        started = time.monotonic()
        reply = answer(connection)
    assert reply.startswith(b"HTTP/1.1 408 ")
    assert reply.endswith(b'{"detail":"request headers did not arrive within 1 seconds"}')
    assert time.monotonic() - started < 9


def test_a_silent_connection_is_closed(port: int) -> None:
    with connect(port) as connection:
        assert answer(connection).startswith(b"HTTP/1.1 408 ")


def test_a_body_that_trickles_in_closes_the_connection_and_the_app_sees_it_go(port: int) -> None:
    with connect(port) as connection:
        connection.sendall(b"POST /slow-body HTTP/1.1\r\nhost: localhost\r\ncontent-length: 100\r\n\r\nab")
        reply = answer(connection)
    assert reply == b""
    deadline = time.monotonic() + 5
    while "/slow-body" not in DISCONNECTS:
        assert time.monotonic() < deadline, "the app never saw the client go"
        time.sleep(0.02)


def test_beyond_the_concurrency_limit_requests_get_503(port: int) -> None:
    held = [connect(port) for _ in range(4)]
    try:
        for connection in held:
            connection.sendall(b"POST /hold HTTP/1.1\r\nhost: localhost\r\ncontent-length: 10\r\n\r\n")
        with connect(port) as extra:
            extra.sendall(b"GET /x HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
            reply = answer(extra)
        assert reply.startswith(b"HTTP/1.1 503 ")
    finally:
        for connection in held:
            connection.close()


def test_python_m_app_serves_with_the_limits_of_its_settings(tmp_path: Any) -> None:
    settings = Settings(
        data_dir=tmp_path, max_header_bytes=2048, header_timeout_seconds=3, body_timeout_seconds=7, max_connections=9
    )
    options = server_options(settings)
    protocol = options["http"]
    assert issubclass(protocol, GuardedHttpToolsProtocol)
    assert protocol.limits == ConnectionLimits(max_header_bytes=2048, header_timeout=3.0, body_timeout=7.0)
    assert options["limit_concurrency"] == 9
