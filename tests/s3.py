"""A real S3 server on loopback for the tests: moto's server, started once per session (`s3_server`).

Each test gets its own bucket (`s3_url`), and the standard AWS variables
point boto3 at the server, as a deployment's would. Without moto the tests
that need it skip with the reason; under .ci/run (STOCKCAST_REQUIRE_S3=1)
they fail instead, since the dev extra pins it.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator

import pytest

REQUIRE_S3 = os.environ.get("STOCKCAST_REQUIRE_S3") == "1"
# moto accepts any credentials; boto3 insists on having some.
S3_ENVIRONMENT = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1"}


class S3Server:
    """moto's server in a thread of the test process; `stop` and `start` again keep its buckets (an outage)."""

    def __init__(self) -> None:
        from moto.server import ThreadedMotoServer

        self._server_class = ThreadedMotoServer
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = int(probe.getsockname()[1])
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._server: ThreadedMotoServer | None = None

    def start(self) -> None:
        """Listen on the same port as before (a restart after `stop`)."""
        self._server = self._server_class(ip_address="127.0.0.1", port=self.port, verbose=False)
        self._server.start()

    def stop(self) -> None:
        """Stop answering and close the port, so clients see connections refused (not a silent hang)."""
        if self._server is not None:
            self._server.stop()
            wsgi = self._server._server
            if wsgi is not None:
                wsgi.server_close()
            self._server = None

    def environment(self) -> dict[str, str]:
        """The AWS variables a process needs to reach this server."""
        return {**S3_ENVIRONMENT, "AWS_ENDPOINT_URL": self.endpoint}

    def create_bucket(self) -> str:
        """A new empty bucket's name."""
        import boto3

        name = f"stockcast-{uuid.uuid4().hex[:12]}"
        client = boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        client.create_bucket(Bucket=name)
        return name


def moto_missing() -> str | None:
    """Why moto's server cannot run here, or None."""
    try:
        import boto3  # noqa: F401
        from moto.server import ThreadedMotoServer  # noqa: F401
    except ImportError as error:
        return f"moto[server] or boto3 is not installed ({error}); pip install -e '.[dev]'"
    return None


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """One moto server for the session, on a free loopback port."""
    reason = moto_missing()
    if reason is not None:
        if REQUIRE_S3:
            pytest.fail(f"{reason}; .ci/run requires it")
        pytest.skip(reason)
    server = S3Server()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def s3_url(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> str:
    """`s3://<a fresh bucket>/store` with this process's AWS variables pointing at the test server."""
    for key, value in s3_server.environment().items():
        monkeypatch.setenv(key, value)
    return f"s3://{s3_server.create_bucket()}/store"
