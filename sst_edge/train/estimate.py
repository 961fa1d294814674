"""How long a training run will take, from the times of its first optimizer steps: what `train` prints
after its first steps and all that `train --dry-run` does. A step's time is its wall time, the loader's
waits included, so a run bound by decoding is estimated as such."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from statistics import median
from typing import Any

from ..text import duration


@dataclass
class Estimate:
    steps_timed: int                 # optimizer steps whose time was taken (the first, warming up, is not)
    seconds_per_step: float          # their median
    steps_left: int                  # optimizer steps still to run
    steps_total: int
    episodes_per_step: int           # per rank
    world: int                       # ranks
    device: str
    precision: str
    validation_episodes: int         # per epoch
    epochs_left: int
    seconds_per_validation_episode: float | None = None  # measured by --dry-run; None: not included

    @classmethod
    def from_times(cls, times: list[float], **fields: Any) -> Estimate:
        return cls(steps_timed=len(times), seconds_per_step=float(median(times)), **fields)

    @property
    def training_seconds(self) -> float:
        return self.steps_left * self.seconds_per_step

    @property
    def validation_seconds(self) -> float | None:
        if self.seconds_per_validation_episode is None:
            return None
        return self.epochs_left * self.validation_episodes * self.seconds_per_validation_episode

    @property
    def total_seconds(self) -> float:
        return self.training_seconds + (self.validation_seconds or 0.0)

    def lines(self) -> list[str]:
        per = (f"{self.episodes_per_step} episodes x {self.world} ranks" if self.world > 1
               else f"{self.episodes_per_step} episode{'s' if self.episodes_per_step > 1 else ''}")
        val = self.validation_seconds
        val_s = (f" + validation {duration(val)} ({self.validation_episodes} episodes x {self.epochs_left} "
                 "epochs)" if val is not None else
                 (" + validation (not timed yet)" if self.validation_episodes else ""))
        return [f"estimate  {self.steps_left:,} optimizer steps ({per} each) x {self.seconds_per_step:.3g} s "
                f"(median of {self.steps_timed} steps, loader included){val_s} = "
                f"{duration(self.total_seconds)} on {self.device} in {self.precision}"]

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "training_seconds": self.training_seconds,
                "validation_seconds": self.validation_seconds, "total_seconds": self.total_seconds}
