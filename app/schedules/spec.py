"""What a schedule says: the dataset, when (after the close of the model's calendar), how many new rows, the settings.

`ScheduleSpec` is the one definition: `PUT /models/{name}/schedule` takes it
as its body and `python -m app schedule set` builds it from its flags. The
training settings are `TrainConfig`'s public fields, derived as `/train`
derives them (`training.config.optional_fields`), so they carry the same
bounds. See docs/design.md, "Schedules".
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, create_model

from training.config import TrainConfig, optional_fields

# A name as the stores accept it (training.files.NAME_PATTERN).
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


class ScheduleWhen(BaseModel):
    """When runs fall due: `after_close_minutes` after the close of every `every_sessions`-th session."""

    model_config = ConfigDict(extra="forbid")

    after_close_minutes: int = Field(
        45,
        ge=0,
        le=24 * 60,
        description="Minutes after the session's close (early closes included) on the model's calendar.",
    )
    every_sessions: int = Field(
        1, ge=1, le=250, description="Run after every n-th session, counted from the session the schedule was set."
    )


if TYPE_CHECKING:
    ScheduleTraining = BaseModel
else:
    # The same fields and bounds as /train's TrainRequest: one definition, in training.config.
    ScheduleTraining = create_model(
        "ScheduleTraining",
        __config__=ConfigDict(extra="forbid"),
        __doc__="Training settings of each run (TrainConfig's fields); omitted ones take the training defaults.",
        __module__=__name__,
        **optional_fields(),
    )


class ScheduleSpec(BaseModel):
    """A model's retraining schedule, as set over HTTP or from the command line."""

    model_config = ConfigDict(extra="forbid")

    dataset: str = Field(pattern=NAME_PATTERN, description="The dataset each run trains on.", examples=["msft"])
    when: ScheduleWhen = Field(default_factory=ScheduleWhen)
    min_new_rows: int = Field(
        1,
        ge=0,
        le=100_000,
        description="Rows the dataset must have gained since the schedule's last run (else since the newest"
        " version trained on it); fewer skip the run, saying why.",
    )
    training: ScheduleTraining = Field(default_factory=ScheduleTraining)  # type: ignore[arg-type]
    enabled: bool = Field(True, description="A disabled schedule keeps its settings and history but never runs.")

    def training_settings(self) -> dict[str, Any]:
        """The training settings a run's request carries (the ones set; the rest take TrainConfig's defaults)."""
        return self.training.model_dump(exclude_none=True, mode="json")

    def check(self) -> TrainConfig:
        """The training configuration each run will use; ConfigError (422) for inconsistent settings."""
        return TrainConfig(**self.training_settings())
