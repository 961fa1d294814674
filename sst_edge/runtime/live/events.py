"""Events, not spans: consecutive spans of one label become one event, with hysteresis and a minimum length.

Per source, after smoothing (stream.SpanScorer), each span has a label (or "unknown"), its nearest label
(`top`), that label's calibrated confidence and its score against the gallery's calibrated score
threshold. Hysteresis, on the score: an event of label L opens on a span labelled L (the calibrated rule:
score >= threshold) with confidence >= `enter`; it goes on while the spans' nearest label stays L with a
score above a lower level, threshold - `margin` x |threshold|, and confidence >= `leave`. A span between the
two levels is "unknown" on its own, and does not open an event, but holds one open: a score wavering around
the threshold does not open and close events span by span. Any other span ends the event: another
label, a score below the lower level or a content problem ("unknown"), a confidence below `leave`.
The span that ends an event may open the next one. An event is announced
("start") once it has lasted `min_duration` seconds (from its first span's start to its last span's end),
and completed ("end") when it ends; one that ends sooner is never announced, only counted (`suppressed`).
A gap in the video (a reconnect), a changed gallery, the end of a source and shutdown end the open event
too, with that reason.

The event document (EVENT_FORMAT, version EVENT_VERSION; docs/live.md, "Event schema"): kind "start" | "end",
id (shared by an event's start and end), source, label, start_s / end_s (seconds on the source's
timeline), start_time / end_time (UTC wall clock, ISO 8601), duration_s, spans, peak_confidence,
mean_confidence, reason ("end" only), model (the model card's sha256). The watch loop adds emitted_at and,
for an event a span decided, latency_s (from the arrival of that span's last frame to emission).
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from ...device.settings import EVENT_MARGIN as MARGIN
from ...errors import SSTEdgeError
from ...schema import HEX64, NONNEG_INT, NONNEG_NUMBER, TEXT, header_schema
from ..calibration import UNKNOWN
from ..classify import SCORE_RULE

EVENT_FORMAT = "sst-edge.event"
EVENT_VERSION = 1
KINDS = ("start", "end")
END_REASONS = ("label changed", "unknown", "low confidence", "source lost", "source ended",
               "gallery changed", "shutdown")

_NUMBER = {"type": "number"}
_TIME = {"type": "string", "pattern": r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$"}
_CONFIDENCE = {"type": "number", "minimum": 0, "maximum": 1}
EVENT_SCHEMA: dict[str, Any] = {  # docs/live.md documents each entry
    "type": "object",
    "required": ["format", "version", "kind", "id", "source", "label", "start_s", "end_s", "start_time",
                 "end_time", "duration_s", "spans", "peak_confidence", "mean_confidence", "model"],
    "additionalProperties": False,
    "properties": {
        **header_schema(EVENT_FORMAT, EVENT_VERSION),
        "kind": {"enum": list(KINDS)},
        "id": {"type": "string", "pattern": "^[0-9a-f]{16}$"},
        "source": TEXT, "label": TEXT,
        "start_s": _NUMBER, "end_s": _NUMBER, "duration_s": NONNEG_NUMBER,
        "start_time": _TIME, "end_time": _TIME, "emitted_at": _TIME,
        "spans": {**NONNEG_INT, "minimum": 1},
        "peak_confidence": _CONFIDENCE, "mean_confidence": _CONFIDENCE,
        "reason": {"enum": list(END_REASONS)},
        "model": HEX64,
        "latency_s": NONNEG_NUMBER,
    },
    "if": {"properties": {"kind": {"const": "end"}}},
    "then": {"required": ["reason"]},
    "else": {"not": {"required": ["reason"]}},
}


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class EventPolicy:
    """margin: how far below the calibrated score threshold (a fraction of |threshold|) an open event's
    spans may fall; enter / leave: confidences that open and keep an event (enter >= leave; 0: the score
    rule alone); min_duration: seconds an event must last to be announced."""

    enter: float = 0.0
    leave: float = 0.0
    margin: float = MARGIN
    min_duration: float = 0.0

    def __post_init__(self) -> None:
        for name in ("enter", "leave"):
            v = getattr(self, name)
            if not (isinstance(v, int | float) and 0.0 <= v <= 1.0):
                raise SSTEdgeError(f"--{name} must lie in [0, 1], got {v!r}")
        if self.leave > self.enter:
            raise SSTEdgeError(f"--leave ({self.leave}) must not exceed --enter ({self.enter}): an event "
                               "would end on the confidence that opened it")
        if not (math.isfinite(self.margin) and 0 <= self.margin <= 1):
            raise SSTEdgeError(f"--margin must be a fraction in [0, 1], got {self.margin!r}")
        if not (math.isfinite(self.min_duration) and self.min_duration >= 0):
            raise SSTEdgeError(f"--min-duration must be a number of seconds >= 0, got {self.min_duration!r}")


@dataclass(frozen=True)
class SpanDecision:
    """What the event builder needs of a scored span."""

    start_s: float
    end_s: float
    label: str  # after smoothing, "unknown" possible
    confidence: float  # the top label's (smoothed) calibrated confidence
    wall: float  # time.time() of the span's last frame
    top: str = ""  # the nearest label ("" : the same as label)
    score: float = 0.0  # its smoothed logit
    score_threshold: float | None = None  # the calibrated one (None: no score rule)
    why: str = ""  # why the span is "unknown"

    def holds(self, label: str, policy: EventPolicy) -> bool:
        """Whether this span keeps an open event of `label` going (see the module docstring)."""
        if self.confidence < policy.leave or (self.top or self.label) != label:
            return False
        if self.label == label:
            return True
        thr = self.score_threshold
        below_only = self.why.startswith(SCORE_RULE)  # unknown for its score alone, not for its content
        return thr is not None and below_only and self.score >= thr - policy.margin * abs(thr)


@dataclass
class _Open:
    id: str
    label: str
    start_s: float
    end_s: float
    start_wall: float
    end_wall: float
    confidences: list[float] = field(default_factory=list)
    announced: bool = False


@dataclass
class EventBuilder:
    """One source's events from its spans, in order (see the module docstring)."""

    source: str
    policy: EventPolicy = field(default_factory=EventPolicy)
    model: str = ""
    suppressed: int = 0  # events that ended before min_duration
    emitted: int = 0  # events announced
    _open: _Open | None = None

    @property
    def open_label(self) -> str | None:
        return self._open.label if self._open else None

    def update(self, d: SpanDecision) -> list[dict[str, Any]]:
        """The events this span settles: an end, a start, or both (in that order), or none."""
        out: list[dict[str, Any]] = []
        ev = self._open
        if ev is not None:
            if d.holds(ev.label, self.policy):
                ev.end_s, ev.end_wall = d.end_s, d.wall
                ev.confidences.append(d.confidence)
                out += self._announce()
                return out
            why = "low confidence" if (d.top or d.label) == ev.label and d.confidence < self.policy.leave \
                else "label changed" if d.label not in (UNKNOWN, ev.label) else "unknown"
            out += self.close(why)
        if d.label != UNKNOWN and d.confidence >= self.policy.enter:
            span_s = d.end_s - d.start_s
            self._open = _Open(uuid.uuid4().hex[:16], d.label, d.start_s, d.end_s, d.wall - span_s, d.wall,
                               [d.confidence])
            out += self._announce()
        return out

    def close(self, reason: str) -> list[dict[str, Any]]:
        """End the open event (if any) for `reason` (one of END_REASONS): its "end", if it was announced."""
        if reason not in END_REASONS:
            raise ValueError(f"unknown end reason {reason!r}")
        ev, self._open = self._open, None
        if ev is None:
            return []
        if not ev.announced:
            self.suppressed += 1
            return []
        return [self._doc(ev, "end", reason)]

    def _announce(self) -> list[dict[str, Any]]:
        ev = self._open
        assert ev is not None
        if ev.announced or ev.end_s - ev.start_s < self.policy.min_duration - 1e-9:
            return []
        ev.announced = True
        return [self._doc(ev, "start")]

    def _doc(self, ev: _Open, kind: str, reason: str | None = None) -> dict[str, Any]:
        self.emitted += kind == "start"
        c = ev.confidences
        doc: dict[str, Any] = {
            "format": EVENT_FORMAT, "version": EVENT_VERSION, "kind": kind, "id": ev.id,
            "source": self.source, "label": ev.label, "start_s": round(ev.start_s, 4),
            "end_s": round(ev.end_s, 4), "start_time": iso(ev.start_wall), "end_time": iso(ev.end_wall),
            "duration_s": round(ev.end_s - ev.start_s, 4), "spans": len(c),
            "peak_confidence": round(max(c), 6), "mean_confidence": round(sum(c) / len(c), 6),
            "model": self.model}
        if reason is not None:
            doc["reason"] = reason
        return doc
