"""Errors raised by the training package; each says what the caller must fix."""


class StockcastError(Exception):
    """Base class; `status_code` is what an HTTP layer should answer with."""

    status_code = 400


class DataError(StockcastError):
    """The input data cannot be used as it is (missing column, junk, too short)."""

    status_code = 422


class ConfigError(StockcastError):
    """A training setting is invalid or inconsistent with the data."""

    status_code = 422


class NotFoundError(StockcastError):
    """A model, version, alias or dataset does not exist."""

    status_code = 404


class BrokenVersionError(StockcastError):
    """A stored version is incomplete or corrupt and must not be served."""

    status_code = 409
