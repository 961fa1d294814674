"""Settings shared by the host and the device, free of numpy and of any decoder: the few-shot head's
configuration, the evaluation protocol's episode count, and the resize rule of preprocessing. The CLI
builds its parsers (and their defaults) from these, so `sst-edge --help` imports nothing heavy."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..errors import SSTEdgeError

FROM_RUN = "run"  # a head setting taken from the run (or card) that made the weights; None means "no window"
LITERATURE_EPISODES = 10_000
HEADS = ("alignment", "prototype", "cca")
PARAMETRIC_HEADS = ("cca",)  # heads with learned weights: they come from the run or the model, never defaults
DEFAULT_HEAD = "alignment"
DEFAULT_TAU = 0.1
DEFAULT_WINDOW: int | None = 1
# cca's logit is a cosine / tau (in [-1, 1]), not a squared distance: RENet's temperature 0.2 (a cosine
# classifier's scale of 5), the default when a cca head is asked for without a tau
DEFAULT_TAUS = {"alignment": DEFAULT_TAU, "prototype": DEFAULT_TAU, "cca": 0.2}


@dataclass(frozen=True)
class HeadConfig:
    """Which head and its two constants; recorded in run records and model cards.

    tau None takes the kind's default (`DEFAULT_TAUS`). cca ignores `window` (its co-attention spans
    every frame pair) and stores None, whatever was given, so a `--window` meant for alignment cannot
    make two cca records differ. `params` are a parametric head's weights (cca: numpy arrays, see
    device/cca.py), attached where they were loaded from a run or a model; they are not part of the
    record (`to_dict`), of equality or of the hash, which stay those of kind, tau and window."""

    kind: str = DEFAULT_HEAD
    tau: float | None = None
    window: int | None = DEFAULT_WINDOW  # alignment only; None = every support frame
    params: Any = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.tau is None:
            object.__setattr__(self, "tau", DEFAULT_TAUS.get(self.kind, DEFAULT_TAU))
        if self.kind == "cca":
            object.__setattr__(self, "window", None)
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
        return {"kind": self.kind, "tau": self.tau, "window": self.window}

    def as_kind(self, kind: str) -> HeadConfig:
        """The head `kind` with these constants where they mean the same: alignment and prototype share
        tau (and window); between cca and the others the scales differ (cosine vs squared distance), so
        the other kind takes its own defaults. Weights are not carried over (attach them for cca)."""
        if kind == self.kind:
            return HeadConfig(kind, self.tau, self.window, self.params)
        if "cca" in (kind, self.kind):
            return HeadConfig(kind)
        return HeadConfig(kind, self.tau, self.window)

    def with_params(self, params: Any) -> HeadConfig:
        return HeadConfig(self.kind, self.tau, self.window, params)

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
