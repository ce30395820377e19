"""What one window is: the canonical columns, the transform, and `WindowSpec`.

The vocabulary that configuration (`training.config`), cleaning
(`training.data`), preprocessing (`training.features`) and serving share.
It imports nothing but `training.errors`, so each of them can read it
without importing the others. See docs/design.md, "Data path".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from training.errors import ConfigError

# Canonical column names; user columns are matched to these case- and
# space-insensitively ("Adj Close", "adj_close" and "ADJCLOSE" all match).
DATE_COLUMN = "date"
PRICE_COLUMNS = ("open", "high", "low", "close", "adj_close")
VOLUME_COLUMN = "volume"
# Boolean column added when outliers are masked: True on a flagged row.
OUTLIER_COLUMN = "outlier"

# "relative": scale-free log ratios to the window's last value; "minmax": the
# tutorial's price levels, kept only to show why they fail on new prices.
Transform = Literal["relative", "minmax"]
TRANSFORMS: tuple[Transform, ...] = get_args(Transform)


@dataclass(frozen=True)
class WindowSpec:
    """Which columns go in, which comes out, and how many rows each way."""

    features: tuple[str, ...]
    label: str
    window: int
    horizon: int = 1
    transform: Transform = "relative"

    def __post_init__(self) -> None:
        if self.window < 2:
            raise ConfigError(f"window must be at least 2 rows, got {self.window}")
        if self.horizon < 1:
            raise ConfigError(f"horizon must be at least 1 step, got {self.horizon}")
        if not self.features:
            raise ConfigError("features must name at least one column")
        unknown = [column for column in self.features if column not in (*PRICE_COLUMNS, VOLUME_COLUMN)]
        if unknown:
            raise ConfigError(
                f"feature column(s) {unknown} are not supported; choose from {[*PRICE_COLUMNS, VOLUME_COLUMN]}"
            )
        if len(set(self.features)) != len(self.features):
            raise ConfigError(f"features repeat a column: {list(self.features)}")
        if self.label not in self.features:
            raise ConfigError(
                f"label '{self.label}' must be one of the features {list(self.features)}: "
                "the forecast is expressed relative to the label's last value in the window"
            )
        if self.label not in PRICE_COLUMNS:
            raise ConfigError(f"label must be a price column {list(PRICE_COLUMNS)}, got '{self.label}'")
        if self.transform not in TRANSFORMS:
            raise ConfigError(f"transform must be one of {list(TRANSFORMS)}, got '{self.transform}'")

    @property
    def label_index(self) -> int:
        """Position of the label among the feature columns."""
        return self.features.index(self.label)

    @property
    def price_columns(self) -> tuple[bool, ...]:
        """True for price columns (log-ratio encoded), False for others (volume), in feature order."""
        return tuple(column in PRICE_COLUMNS for column in self.features)
