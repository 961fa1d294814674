"""Settings shared by the host and the device, free of numpy and of any decoder: the few-shot head's
configuration, the evaluation protocol's episode count, and the resize rule of preprocessing. The CLI
builds its parsers (and their defaults) from these, so `sst-edge --help` imports nothing heavy."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from ..errors import SSTEdgeError

FROM_RUN = "run"  # a head setting taken from the run (or card) that made the weights; None means "no window"
LITERATURE_EPISODES = 10_000
HEADS = ("alignment", "prototype")
DEFAULT_HEAD = "alignment"
DEFAULT_TAU = 0.1
DEFAULT_WINDOW: int | None = 1


@dataclass(frozen=True)
class HeadConfig:
    """Which head and its two constants; recorded in run records and model cards."""

    kind: str = DEFAULT_HEAD
    tau: float = DEFAULT_TAU
    window: int | None = DEFAULT_WINDOW  # alignment only; None = every support frame

    def __post_init__(self) -> None:
        problems = []
        if self.kind not in HEADS:
            problems.append(f"head must be one of {', '.join(HEADS)}, got {self.kind!r}")
        if not self.tau > 0:
            problems.append(f"tau must be > 0, got {self.tau}")
        if self.window is not None and (isinstance(self.window, bool) or int(self.window) != self.window
                                        or self.window < 0):
            problems.append(f"window must be an integer >= 0 or None, got {self.window!r}")
        if problems:
            raise SSTEdgeError("invalid few-shot head", problems=problems)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> HeadConfig:
        if not isinstance(d, dict) or set(d) - {"kind", "tau", "window"}:
            raise SSTEdgeError(f"a head is an object with kind, tau and window, got {d!r}")
        return cls(**d)


def default_resize(size: int) -> int:
    """The shorter side before a size x size crop: 8/7 of it (256 for 224), the usual evaluation ratio."""
    return int(round(size * 8 / 7))

# watch's hysteresis: an open event goes on while its label's score stays above the calibrated score
# threshold minus this fraction of it (runtime/live/events.py; here so that `--help` needs no numpy)
EVENT_MARGIN = 0.1
