"""Every training hyper-parameter, defined once: its type, default, bounds and help text.

`TrainConfig` is the one definition: the `stockcast-train train` flags
(`training.cli.add_config_flags`) and the `/train` request schema (through
`optional_fields`) are derived from its fields, so a new hyper-parameter is
one field here, with a `description` and, for a number, bounds that refuse
values which would run a job for days or exhaust memory. The enumerations
are defined here too, once (the window transform in `training.spec`). Only
pydantic, `training.errors` and `training.spec` are imported, so the API
process and the command line's quick commands read it without NumPy or Keras.
See docs/design.md, "Data path".
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic.fields import FieldInfo

from training.errors import ConfigError
from training.spec import Transform, WindowSpec

# Enumerations ----------------------------------------------------------------

Architecture = Literal["lstm", "simple_rnn", "gru"]
ARCHITECTURES: tuple[Architecture, ...] = get_args(Architecture)
# "studentized" divides each residual by its input window's realised
# volatility, so intervals widen in turbulent markets and narrow in calm ones;
# "absolute" is plain split conformal on |log(actual/forecast)|.
IntervalScore = Literal["studentized", "absolute"]
INTERVAL_SCORES: tuple[IntervalScore, ...] = get_args(IntervalScore)
# "every": refit scaler, network, ridge and intervals in each fold; "once":
# fit them in the first fold and reuse them for the later ones.
BacktestRefit = Literal["every", "once"]
BACKTEST_REFITS: tuple[BacktestRefit, ...] = get_args(BacktestRefit)

# "per_step": each step's band covers that step's outcome at the level;
# "path": one band that covers the whole forecast path at the level (wider).
Band = Literal["per_step", "path"]
BANDS: tuple[Band, ...] = get_args(Band)
DEFAULT_BAND: Band = "per_step"
# "disjoint": early stopping on the first part of the validation tail, the
# conformal calibration on its last part, horizon - 1 rows later; "shared":
# both on the same windows, which biases the calibration low (leaky, kept
# only so the benchmark can measure it).
Calibration = Literal["disjoint", "shared"]
CALIBRATIONS: tuple[Calibration, ...] = get_args(Calibration)
DEFAULT_CALENDAR = "XNYS"

DEFAULT_INTERVAL_SCORE: IntervalScore = "studentized"
DEFAULT_INTERVAL_LEVELS: tuple[float, ...] = (0.8, 0.9, 0.95)
# numpy's and TensorFlow's seeds are unsigned 32-bit integers.
MAX_SEED = 2**32 - 1
# The fields that decide which windows a backtest scores: two configurations
# that agree on them (on the same data) are scored on the same windows.
FOLD_FIELDS = (
    "validation_fraction",
    "test_fraction",
    "backtest_folds",
    "backtest_stride",
    "backtest_refit",
    "calibration",
    "calibration_share",
    "horizon",
)

Level = Annotated[float, Field(gt=0, lt=1, allow_inf_nan=False)]
ColumnName = Annotated[str, Field(min_length=1, max_length=32)]


class TrainConfig(BaseModel):
    """Every hyper-parameter and preprocessing choice of one training run.

    Each field's `description` is the help text of its command-line flag and
    of its `/train` field; its bounds hold for both. Constructing one with a
    value out of bounds raises `ConfigError` naming the field and the bound.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    architecture: Architecture = Field("lstm", description="Recurrent layer type.")
    features: tuple[ColumnName, ...] = Field(
        ("open", "high", "low", "close", "volume"),
        min_length=1,
        max_length=16,
        description="Input columns, in the order the network sees them.",
    )
    label: ColumnName = Field("close", description="Price column to forecast; one of the features.")
    window: int = Field(40, ge=2, le=500, description="Rows of history per input.")
    horizon: int = Field(1, ge=1, le=60, description="Days forecast at once.")
    transform: Transform = Field(
        "relative",
        description="relative: scale-free log ratios; minmax: the tutorial's price levels, for comparison only.",
    )
    units: int = Field(64, ge=1, le=1024, description="Recurrent units per layer.")
    layers: int = Field(1, ge=1, le=8, description="Stacked recurrent layers.")
    dropout: float = Field(0.0, ge=0, lt=1, allow_inf_nan=False, description="Input dropout of each recurrent layer.")
    learning_rate: float = Field(1e-3, gt=0, le=1, allow_inf_nan=False, description="Adam learning rate.")
    batch_size: int = Field(64, ge=1, le=4096, description="Windows per gradient step.")
    epochs: int = Field(30, ge=1, le=1000, description="Most epochs; early stopping may end sooner.")
    patience: int = Field(5, ge=0, le=1000, description="Epochs without val_loss progress before stopping.")
    seed: int = Field(42, ge=0, le=MAX_SEED, description="Random seed of weights, dropout and shuffling.")
    validation_fraction: float = Field(
        0.15, gt=0, lt=0.5, allow_inf_nan=False, description="Share of rows for early stopping and calibration."
    )
    test_fraction: float = Field(
        0.15, gt=0, lt=0.5, allow_inf_nan=False, description="Share of the newest rows kept for the test."
    )
    interval_levels: tuple[Level, ...] = Field(
        DEFAULT_INTERVAL_LEVELS, min_length=1, max_length=10, description="Coverage levels of the intervals."
    )
    interval_score: IntervalScore = Field(
        DEFAULT_INTERVAL_SCORE,
        description="Conformal score: studentized (residual over window volatility) or absolute.",
    )
    backtest_folds: int = Field(3, ge=0, le=20, description="Walk-forward folds judged by the gate (0: none).")
    backtest_stride: int = Field(
        0, ge=0, le=10_000, description="Rows per backtest test segment (0: spread the test share over the folds)."
    )
    backtest_refit: BacktestRefit = Field(
        "every", description="Refit in every backtest fold, or once in the first and reuse."
    )
    shuffle_labels: bool = Field(
        False, description="Shuffle the training labels, destroying the signal: only for testing the gate."
    )
    interval_band: Band = Field(
        DEFAULT_BAND, description="per_step: each step's band covers that step; path: one band covers the whole path."
    )
    calibration: Calibration = Field(
        "disjoint",
        description="disjoint: calibrate intervals on a block after the early-stopping block; shared: on the same "
        "windows (leaky, for measurement only).",
    )
    calibration_share: float = Field(
        0.5, gt=0, lt=1, allow_inf_nan=False, description="Share of the validation rows kept for calibration."
    )
    production_refit: bool = Field(
        True, description="Serve a network refitted on every row after evaluation (the figures stay out of sample)."
    )
    calendar: str = Field(
        DEFAULT_CALENDAR,
        min_length=1,
        max_length=16,
        description="Trading calendar of the data, for forecast dates: XNYS, XKRX, ... or 24/7 for crypto.",
    )

    def __init__(self, **values: Any) -> None:
        # Callers (the command line, the training process, tests) catch ConfigError,
        # the domain error that carries its 422, not pydantic's ValidationError.
        try:
            super().__init__(**values)
        except ValidationError as error:
            raise ConfigError(describe_errors(error)) from None

    @model_validator(mode="after")
    def _consistent(self) -> TrainConfig:
        """Checks across fields (label among the features, known columns), by WindowSpec's own rules."""
        self.window_spec()
        from training.calendars import check_calendar

        check_calendar(self.calendar)
        return self

    def window_spec(self) -> WindowSpec:
        """The windowing and transform part of the configuration."""
        return WindowSpec(
            features=tuple(self.features),
            label=self.label,
            window=self.window,
            horizon=self.horizon,
            transform=self.transform,
        )

    def hyperparameters(self) -> dict[str, Any]:
        """JSON-ready copy of the configuration, recorded in metadata."""
        return self.model_dump(mode="json")

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with some fields changed, checked like a new configuration."""
        return TrainConfig(**{**self.model_dump(), **changes})

    @classmethod
    def from_hyperparameters(cls, values: dict[str, Any]) -> TrainConfig:
        """The configuration a version recorded (`hyperparameters()`); fields it predates keep their defaults."""
        return cls(**{key: value for key, value in values.items() if key in cls.model_fields})

    def with_backtest_of(self, other: TrainConfig) -> TrainConfig:
        """This model on `other`'s folds: the same split, stride and blocks, so both score the same windows."""
        return self.replace(**other.model_dump(include=set(FOLD_FIELDS)))


# Fields that only code sets: the request schema and the command line leave
# them out, so serving answers keep the interval levels they document.
INTERNAL_FIELDS: frozenset[str] = frozenset({"interval_levels"})


def public_fields() -> dict[str, FieldInfo]:
    """TrainConfig's fields that callers may set, in definition order."""
    return {name: info for name, info in TrainConfig.model_fields.items() if name not in INTERNAL_FIELDS}


def optional_fields() -> dict[str, Any]:
    """Each public field as `(type | None, FieldInfo)` defaulting to None, with the same bounds and help.

    For `pydantic.create_model`: a request that leaves a field out (or sends
    null) takes TrainConfig's default, and a value out of bounds is refused
    with pydantic's own message naming the field and the bound.
    """
    derived: dict[str, Any] = {}
    for name, info in public_fields().items():
        # The constraints go on the inner type so that null still means "the default".
        inner: Any = Annotated[(info.annotation, *info.metadata)] if info.metadata else info.annotation
        description = f"{info.description} Default: {_default_text(info.default)}."
        derived[name] = (inner | None, Field(None, description=description))
    return derived


def bounds_text(info: FieldInfo) -> str:
    """A field's bounds in words ("2 to 500", "at least 0", "greater than 0, less than 1"), or ""."""
    lower = upper = ""
    for constraint in info.metadata:
        for attribute, words in (("ge", "at least"), ("gt", "greater than"), ("le", "at most"), ("lt", "less than")):
            value = getattr(constraint, attribute, None)
            if value is not None and attribute in ("ge", "gt"):
                lower = f"{words} {value}"
            elif value is not None:
                upper = f"{words} {value}"
    if lower.startswith("at least") and upper.startswith("at most"):
        return f"{lower.removeprefix('at least ')} to {upper.removeprefix('at most ')}"
    return ", ".join(part for part in (lower, upper) if part)


def upper_bound(name: str) -> int:
    """The largest value (or, for a tuple, the most items) TrainConfig allows for field `name`."""
    for constraint in TrainConfig.model_fields[name].metadata:
        for attribute in ("le", "max_length"):
            value = getattr(constraint, attribute, None)
            if value is not None:
                return int(value)
    raise ValueError(f"TrainConfig.{name} has no upper bound")


def _default_text(value: Any) -> str:
    if isinstance(value, tuple):
        return ",".join(str(item) for item in value)
    return str(value).lower() if isinstance(value, bool) else str(value)


def describe_errors(error: ValidationError) -> str:
    """One line per problem: `seed: Input should be less than or equal to 4294967295, got -1`."""
    lines = []
    for item in error.errors():
        location = ".".join(str(part) for part in item.get("loc", ()))
        message = item.get("msg", "invalid")
        if item.get("type") != "missing":
            message = f"{message}, got {item.get('input')!r}"
        lines.append(f"{location}: {message}" if location else message)
    return "; ".join(lines)
