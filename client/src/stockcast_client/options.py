"""The client's settings, each named once: `Client` and `AsyncClient` take these fields as keyword arguments."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Literal

URL_VARIABLE = "STOCKCAST_URL"
KEY_VARIABLE = "STOCKCAST_API_KEY"
DEFAULT_URL = "http://127.0.0.1:8000"
OnUnavailable = Literal["raise", "naive"]


@dataclass(frozen=True)
class Options:
    """How the client waits, retries and falls back."""

    deadline: float = 30.0
    """Seconds one call may take, every retry and wait included (per call: `deadline=` of each method)."""
    timeout: float = 10.0
    """Seconds one attempt waits for the service to connect, accept the body or answer (never past the deadline)."""
    max_attempts: int = 6
    """Attempts per call at most, the first included."""
    backoff_seconds: float = 0.2
    """The wait before the first retry, doubled for each later one (half fixed, half random)."""
    max_backoff_seconds: float = 5.0
    """The longest wait between attempts, unless the service's Retry-After asks for longer."""
    on_unavailable: OnUnavailable = "raise"
    """`naive`: a forecast the service cannot give within the deadline is the window's last value, marked
    `served_as="client_fallback"`; `raise`: the error is raised."""
    max_batch_windows: int = 1024
    """Windows per /predict/batch request (the service's STOCKCAST_MAX_BATCH_WINDOWS); lowered by itself when the
    service says its limit is lower."""
    model_cache_seconds: float = 300.0
    """How long a model's description (feature order, window length) is reused before it is read again."""

    def __post_init__(self) -> None:
        for name in ("deadline", "timeout", "backoff_seconds", "max_backoff_seconds"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be a positive number of seconds, got {getattr(self, name)!r}")
        if self.model_cache_seconds < 0:
            raise ValueError(f"model_cache_seconds must be >= 0, got {self.model_cache_seconds!r}")
        if self.max_attempts < 1 or self.max_batch_windows < 1:
            raise ValueError("max_attempts and max_batch_windows must be at least 1")
        if self.on_unavailable not in ("raise", "naive"):
            raise ValueError(f"on_unavailable must be 'raise' or 'naive', got {self.on_unavailable!r}")

    @classmethod
    def given(cls, **values: Any) -> Options:
        """Options with the values that are not None; the defaults for the rest."""
        return cls(**{name: value for name, value in values.items() if value is not None})


def base_url_of(given: str | None) -> str:
    """The service's URL: the argument, else STOCKCAST_URL, else the local default; without a trailing slash."""
    return (given or os.environ.get(URL_VARIABLE) or DEFAULT_URL).rstrip("/")


def api_key_of(given: str | None) -> str | None:
    """The API key: the argument, else STOCKCAST_API_KEY, else none (a keyless service on loopback)."""
    return given or os.environ.get(KEY_VARIABLE) or None


__all__ = ["DEFAULT_URL", "KEY_VARIABLE", "URL_VARIABLE", "OnUnavailable", "Options", "api_key_of", "base_url_of"]
