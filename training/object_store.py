"""One S3 bucket (and a key prefix in it) as the store's backing objects, through boto3.

Everything the remote model and dataset stores need from S3, and nothing
more: whole-object reads and writes, create-only writes (`If-None-Match: *`)
and compare-and-swap writes (`If-Match: <etag>`), listing and deleting.
Endpoint, region and credentials come from the standard AWS variables
(`AWS_ENDPOINT_URL`, `AWS_REGION`, `AWS_ACCESS_KEY_ID`, ...), so the same
code talks to AWS S3, SeaweedFS, Garage or Ceph RGW. Every failure to reach
the server becomes StoreUnreachableError (503), so a write answers "retry
later" and the service keeps serving what it has loaded.
See docs/store.md.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from training.errors import ConfigError, StockcastError

# A server that does not answer within these is "unreachable": the caller answers 503 at once
# instead of holding a request (or the registry's refresh) for botocore's default minute.
CONNECT_TIMEOUT_SECONDS = 2.0
READ_TIMEOUT_SECONDS = 20.0
MAX_ATTEMPTS = 2


class StoreUnreachableError(StockcastError):
    """The object store did not answer, or refused the service's credentials or bucket."""

    status_code = 503


class PreconditionFailedError(Exception):
    """A conditional write lost: the key exists (create-only) or changed since it was read (If-Match)."""


@dataclass(frozen=True)
class StoredObject:
    """One object's bytes and its ETag (the token a compare-and-swap write names)."""

    body: bytes
    etag: str


@dataclass(frozen=True)
class ListedObject:
    """A key (relative to the store's prefix), its size and when it was last written (seconds since the epoch)."""

    key: str
    size: int
    modified: float


def parse_store_url(url: str) -> tuple[str, str]:
    """`s3://bucket/some/prefix` → ("bucket", "some/prefix/"); ConfigError for anything else."""
    parsed = urlparse(url)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise ConfigError(f"store URL '{url}' is not s3://bucket[/prefix]")
    prefix = parsed.path.strip("/")
    return parsed.netloc, f"{prefix}/" if prefix else ""


class ObjectStore:
    """Keys under one bucket and prefix; every method maps connection failures to StoreUnreachableError."""

    def __init__(self, url: str, client: Any | None = None) -> None:
        self.url = url
        self.bucket, self.prefix = parse_store_url(url)
        self._client = client if client is not None else _client()
        # (monotonic time, None or why it failed) of the last request that reached a verdict: what
        # `problem` answers without asking again while it is fresh.
        self.last_outcome: tuple[float, str | None] | None = None

    def _key(self, key: str) -> str:
        return self.prefix + key

    def get(self, key: str) -> StoredObject | None:
        """The object at `key`, or None when there is none."""
        with self._translated(f"read {key}"):
            try:
                answer = self._client.get_object(Bucket=self.bucket, Key=self._key(key))
            except self._client.exceptions.NoSuchKey:
                return None
            return StoredObject(answer["Body"].read(), answer["ETag"])

    def put(self, key: str, body: bytes, *, create_only: bool = False, if_match: str | None = None) -> str:
        """Write `body` at `key` and return its ETag.

        `create_only`: fail with PreconditionFailedError if the key exists;
        `if_match`: fail the same way unless the object still has that ETag.
        """
        conditions: dict[str, str] = {}
        if create_only:
            conditions["IfNoneMatch"] = "*"
        if if_match is not None:
            conditions["IfMatch"] = if_match
        with self._translated(f"write {key}"):
            answer = self._client.put_object(Bucket=self.bucket, Key=self._key(key), Body=body, **conditions)
            return str(answer["ETag"])

    def upload_file(self, path: Path, key: str) -> None:
        """Write a local file's bytes at `key` (unconditionally: upload keys are never reused)."""
        self.put(key, path.read_bytes())

    def download_file(self, key: str, path: Path) -> bool:
        """Copy the object at `key` into `path`; False when there is none."""
        found = self.get(key)
        if found is None:
            return False
        path.write_bytes(found.body)
        return True

    def listing(self, prefix: str) -> list[ListedObject]:
        """Every object whose key starts with `prefix`, keys relative to the store's prefix."""
        return list(self._pages(prefix))

    def _pages(self, prefix: str) -> Iterator[ListedObject]:
        with self._translated(f"list {prefix}"):
            paginator = self._client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self._key(prefix)):
                for item in page.get("Contents", []):
                    yield ListedObject(
                        key=item["Key"][len(self.prefix) :],
                        size=int(item["Size"]),
                        modified=item["LastModified"].timestamp(),
                    )

    def children(self, prefix: str) -> list[str]:
        """The names one level below `prefix` (S3's common prefixes, without the trailing slash)."""
        names: list[str] = []
        with self._translated(f"list {prefix}"):
            paginator = self._client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self._key(prefix), Delimiter="/"):
                for common in page.get("CommonPrefixes", []):
                    names.append(common["Prefix"][len(self._key(prefix)) :].rstrip("/"))
        return names

    def delete(self, keys: list[str]) -> None:
        """Delete `keys` (missing ones are no error)."""
        with self._translated("delete"):
            for start in range(0, len(keys), 1000):
                chunk = [{"Key": self._key(key)} for key in keys[start : start + 1000]]
                if chunk:
                    self._client.delete_objects(Bucket=self.bucket, Delete={"Objects": chunk, "Quiet": True})

    def check(self) -> None:
        """Raise StoreUnreachableError unless the bucket answers now."""
        with self._translated("reach the bucket"):
            self._client.head_bucket(Bucket=self.bucket)

    def problem(self, fresh_seconds: float = 5.0) -> str | None:
        """Why the store does not answer, None when it does: the last request's verdict if it is younger than
        `fresh_seconds`, else a new check. A readiness probe must answer within its own timeout, and a
        black-holed server would take the connect timeout on every probe."""
        if self.last_outcome is not None and time.monotonic() - self.last_outcome[0] < fresh_seconds:
            return self.last_outcome[1]
        try:
            self.check()
        except StoreUnreachableError as error:
            return str(error)
        return None

    def _translated(self, action: str) -> _Translated:
        return _Translated(self, action)


class _Translated:
    """Turns botocore's failures into the store's two errors, naming what was being done."""

    def __init__(self, store: ObjectStore, action: str) -> None:
        self.store = store
        self.action = action

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, _traceback: Any) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        if error is None or not isinstance(error, BotoCoreError | ClientError | OSError):
            self.store.last_outcome = (time.monotonic(), None)
        if error is None:
            return
        if isinstance(error, ClientError):
            code = str(error.response.get("Error", {}).get("Code", ""))
            status = int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
            # AWS answers 409 ConditionalRequestConflict when two conditional writes of one key overlap:
            # the caller re-reads and tries again, as after a 412.
            if status == 412 or code in ("PreconditionFailed", "ConditionalRequestConflict"):
                self.store.last_outcome = (time.monotonic(), None)
                raise PreconditionFailedError(f"{self.action}: {code or status}") from error
            message = f"the object store {self.store.url} refused to {self.action} ({code or status}); retry later"
            self.store.last_outcome = (time.monotonic(), message)
            raise StoreUnreachableError(message) from error
        if isinstance(error, BotoCoreError | OSError):
            message = f"the object store {self.store.url} is unreachable ({type(error).__name__}); retry later"
            self.store.last_outcome = (time.monotonic(), message)
            raise StoreUnreachableError(message) from error


def _client() -> Any:
    """A boto3 S3 client from the standard AWS variables, with short timeouts (see the constants above)."""
    import boto3
    from botocore.config import Config

    # Self-hosted servers (SeaweedFS, Garage, moto) serve buckets as paths, not as host names.
    style = "path" if os.environ.get("AWS_ENDPOINT_URL") or os.environ.get("AWS_ENDPOINT_URL_S3") else "auto"
    config = Config(
        connect_timeout=CONNECT_TIMEOUT_SECONDS,
        read_timeout=READ_TIMEOUT_SECONDS,
        retries={"max_attempts": MAX_ATTEMPTS, "mode": "standard"},
        s3={"addressing_style": style},
    )
    return boto3.client("s3", config=config)
