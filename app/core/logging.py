"""Log lines that say which request they are about, as plain text or as JSON.

The request id lives in a context variable set by the gateway middleware
(`app/api/gateway.py`) for the life of a request: code running for it, on
the event loop or in a thread started with `asyncio.to_thread`, sees it, and
a log record factory stamps it on every record, so every line written while
answering a request carries its id without any logger having to pass it.
See docs/design.md, "Service".
"""

from __future__ import annotations

import json
import logging
import logging.config
from contextvars import ContextVar
from typing import Any

REQUEST_ID: ContextVar[str] = ContextVar("stockcast_request_id", default="-")

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"
# Attributes every LogRecord has; anything else on a record came from `extra=` and goes into the JSON object.
_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "request_id"}
_installed = False


def install_request_ids() -> None:
    """Make every log record carry `request_id` (the current request's, or '-'); idempotent."""
    global _installed
    if _installed:
        return
    previous = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        record.request_id = REQUEST_ID.get()
        return record

    logging.setLogRecordFactory(factory)
    _installed = True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, request id, message, extra fields, and the traceback if any."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as a JSON line."""
        entry: dict[str, Any] = {
            "time": self.formatTime(record),
            "level": record.levelname,
            "logger": record.name,
            "request_id": getattr(record, "request_id", "-"),
            "message": record.getMessage(),
        }
        entry.update({key: value for key, value in record.__dict__.items() if key not in _STANDARD})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def log_config(log_format: str, level: str) -> dict[str, Any]:
    """A `logging.config.dictConfig` for the service and uvicorn: one handler on stderr in `log_format`."""
    formatter: dict[str, Any] = (
        {"()": JsonFormatter} if log_format == "json" else {"format": TEXT_FORMAT, "datefmt": "%Y-%m-%dT%H:%M:%S"}
    )
    upper = level.upper()
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"stockcast": formatter},
        "handlers": {
            "stderr": {"class": "logging.StreamHandler", "formatter": "stockcast", "stream": "ext://sys.stderr"}
        },
        "root": {"handlers": ["stderr"], "level": upper},
        "loggers": {
            # uvicorn's own handlers would print a second, differently formatted line.
            "uvicorn": {"handlers": [], "level": upper, "propagate": True},
            "uvicorn.error": {"handlers": [], "level": upper, "propagate": True},
            # The gateway writes the access log (with key name, route template and request id).
            "uvicorn.access": {"handlers": [], "level": "WARNING", "propagate": False},
        },
    }


def configure_logging(log_format: str, level: str) -> dict[str, Any]:
    """Apply `log_config` and stamp request ids on records; returns the config (uvicorn takes it too)."""
    config = log_config(log_format, level)
    logging.config.dictConfig(config)
    install_request_ids()
    return config
