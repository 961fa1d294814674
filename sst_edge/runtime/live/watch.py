"""`sst-edge watch`: several live sources, one ONNX Runtime session, events out, in real time.

The loop (main thread) waits for any source's slot to fill, takes every waiting span (one per source),
embeds them in one call, scores each with its source's SpanScorer (the code `classify --stream` uses, so
a live span is decided as the same span of the recorded file), feeds the decisions to the source's
EventBuilder and hands the events to every sink. Sources keep decoding meanwhile; a live source whose
span is still waiting when the next one is cut replaces it and counts it skipped (sources.py), so when
inference falls behind, spans are skipped, never queued.

Latency: a span's, from the arrival of its last frame to the end of its scoring; an event's, from the
arrival of the last frame of the span that decided it to its emission. Both are kept for the last
LATENCY_WINDOW spans/events and reported as p50/p99.

The gallery's index is replaced atomically by `enroll`; the loop stats it before each batch and, when
it changed, re-opens the gallery and rebuilds the classifier (open events end: "gallery changed"). A
gallery that cannot be read at that moment is reported and the old classifier is kept.

Exit status: 0 when every source has ended or on SIGINT/SIGTERM (open events are closed and every sink
flushed first); EXIT_SOURCE when every source ended and none delivered a frame; with `exit_on_error`,
the first problem of a source ends the watch with EXIT_SOURCE, of a sink with EXIT_SINK.
"""

from __future__ import annotations

import json
import resource
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from ...errors import SSTEdgeError
from ..classify import Classifier
from ..engine import FewShotRuntime
from ..gallery import INDEX_FILE, Gallery
from ..stream import SpanScorer, StreamSpan
from .events import EventBuilder, EventPolicy, SpanDecision, iso
from .sinks import Sink
from .sources import LiveSource, SourceSpec

EXIT_SOURCE = 3
EXIT_SINK = 4
LATENCY_WINDOW = 10000
STATUS_FORMAT = "sst-edge.status"


@dataclass(frozen=True)
class WatchSettings:
    span: float = 2.0
    stride: float = 1.0
    smooth: int = 1
    realtime: bool = False  # files at their own frame rate (live sources always are)
    max_fps: float | None = None
    policy: EventPolicy = field(default_factory=EventPolicy)
    head: str | None = None  # the model's head
    threshold: float | None = None
    min_shots: int = 1
    status_every: float | None = None
    exit_on_error: bool = False
    max_reconnects: int | None = None
    backoff_max: float = 10.0
    duration: float | None = None  # stop after this many seconds (benches, tests)


def percentiles(values: Sequence[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p99": None, "n": 0}
    a = np.asarray(values, np.float64)
    return {"p50": round(float(np.percentile(a, 50)), 4), "p99": round(float(np.percentile(a, 99)), 4),
            "n": len(a)}


def _index_stamp(gallery: Path) -> tuple[int, int, int] | None:
    try:
        st = (gallery / INDEX_FILE).stat()
    except OSError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


@dataclass
class WatchReport:
    exit_code: int
    seconds: float
    sources: dict[str, dict[str, Any]]
    sinks: list[dict[str, Any]]
    events: int
    suppressed: int
    span_latency: dict[str, Any]
    event_latency: dict[str, Any]
    cpu_share: float  # process CPU seconds per wall second (2.0 = two cores busy)
    peak_rss_mb: float
    gallery_reloads: int
    problems: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {"exit_code": self.exit_code, "seconds": round(self.seconds, 3), "sources": self.sources,
                "sinks": self.sinks, "events": self.events, "suppressed": self.suppressed,
                "span_latency_s": self.span_latency, "event_latency_s": self.event_latency,
                "cpu_share": round(self.cpu_share, 3), "peak_rss_mb": round(self.peak_rss_mb, 1),
                "gallery_reloads": self.gallery_reloads, "problems": self.problems}

    def lines(self) -> list[str]:
        lat, ev = self.span_latency, self.event_latency
        n = len(self.sources)
        out = [f"watched {n} source{'s' * (n != 1)} for {self.seconds:.1f} s: "
               f"{self.events} events ({self.suppressed} shorter than --min-duration), span latency p50 "
               f"{lat['p50']} s p99 {lat['p99']} s, event latency p50 {ev['p50']} s p99 {ev['p99']} s, "
               f"CPU {self.cpu_share:.2f} cores, peak RSS {self.peak_rss_mb:.0f} MB"]
        for name, s in self.sources.items():
            problem = f"; last problem: {s['error']}" if s["error"] else ""
            out.append(f"  {name}: {s['spans']} spans scored, {s['skipped']} skipped, {s['reconnects']} "
                       f"reconnects, {s['fps']:.1f} fps{problem}")
        return out


class Watch:
    """Run `watch` on `sources` with `runtime` and the gallery at `gallery`, events to `sinks`;
    messages (problems, status) go to `err`."""

    def __init__(self, runtime: FewShotRuntime, gallery: str | Path, sources: Sequence[SourceSpec],
                 sinks: Sequence[Sink], settings: WatchSettings | None = None, err: TextIO | None = None,
                 on_span: Callable[[str, StreamSpan], None] | None = None):
        if not sources:
            raise SSTEdgeError("watch needs at least one --source")
        names = [s.name for s in sources]
        if len(set(names)) != len(names):
            raise SSTEdgeError(f"a source is named twice: {sorted({n for n in names if names.count(n) > 1})}")
        self.rt, self.gallery_path = runtime, Path(gallery)
        self.settings = settings or WatchSettings()
        self.sinks, self.err = list(sinks), err or sys.stderr
        self.on_span = on_span  # (source, span on the source's timeline): each span as scored
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._messages: deque[tuple[str, str]] = deque()
        self.exit_code = 0
        self.classifier = self._classifier()
        self._stamp = _index_stamp(self.gallery_path)
        self.reloads = 0
        st = self.settings
        self.sources = [LiveSource(spec, runtime.card.preprocess, st.span, st.stride, realtime=st.realtime,
                                   max_fps=st.max_fps, backoff_max=st.backoff_max,
                                   max_reconnects=st.max_reconnects, on_problem=self._on_problem,
                                   notify=self._wake.set) for spec in sources]
        self.scorers = {s.name: SpanScorer(runtime, self.classifier, st.smooth) for s in self.sources}
        self.builders = {s.name: EventBuilder(s.name, st.policy, runtime.card.sha256) for s in self.sources}
        self.connection = {s.name: 0 for s in self.sources}
        self.scored = {s.name: 0 for s in self.sources}
        self.span_lat: dict[str, deque[float]] = {s.name: deque(maxlen=LATENCY_WINDOW) for s in self.sources}
        self.event_lat: deque[float] = deque(maxlen=LATENCY_WINDOW)
        self.problems: list[str] = []
        self._closed_sources: set[str] = set()

    # ----------------------------------------------------------------------------------- messages
    def _on_problem(self, name: str, text: str) -> None:
        with self._lock:
            self._messages.append((name, text))
        self._wake.set()

    def _say(self, text: str) -> None:
        print(f"sst-edge watch: {text}", file=self.err, flush=True)

    def _drain_messages(self) -> None:
        with self._lock:
            msgs, self._messages = list(self._messages), deque()
        for name, text in msgs:
            self._report(f"source {name}: {text}", EXIT_SOURCE)
        for sink in self.sinks:
            for text in sink.problems():
                self._report(text, EXIT_SINK)

    def _report(self, text: str, code: int) -> None:
        """A problem: said on stderr, kept for the summary, and with exit_on_error the end (exit `code`)."""
        self._say(text)
        self.problems.append(text)
        if self.settings.exit_on_error and not self.exit_code:
            self.exit_code = code
            self._stop.set()

    # ------------------------------------------------------------------------------------ gallery
    def _classifier(self) -> Classifier:
        st = self.settings
        return Classifier.from_gallery(Gallery.open(self.gallery_path, self.rt.card), st.head, st.min_shots,
                                       st.threshold, ood=self.rt.ood, ood_why=self.rt.ood_why)

    def _maybe_reload(self) -> None:
        stamp = _index_stamp(self.gallery_path)
        if stamp == self._stamp:
            return
        self._stamp = stamp
        try:
            cls = self._classifier()
        except SSTEdgeError as e:
            self._say(f"the gallery changed but cannot be used ({e}): keeping the one loaded before")
            self.problems.append(f"gallery: {e}")
            return
        self.classifier, self.reloads = cls, self.reloads + 1
        for name in self.scorers:
            self.scorers[name] = SpanScorer(self.rt, cls, self.settings.smooth)
            self._emit(self.builders[name].close("gallery changed"), None)
        self._say(f"gallery reloaded: {len(cls.labels)} labels ({', '.join(cls.labels)})")

    # ------------------------------------------------------------------------------------- events
    def _emit(self, events: list[dict[str, Any]], ready: float | None) -> None:
        """Hand `events` to every sink; `ready`: when the last frame of the span that decided them arrived
        (None for an end no span decided: a gallery change, a source's end, shutdown, which have no
        latency and are kept out of its percentiles)."""
        for ev in events:
            if ready is not None:
                lat = time.monotonic() - ready
                ev["latency_s"] = round(lat, 4)
                self.event_lat.append(lat)
            ev["emitted_at"] = iso(time.time())
            for sink in self.sinks:
                sink.emit(ev)

    def _score(self, taken: list[tuple[LiveSource, Any]]) -> None:
        feats = self.rt.embed(np.stack([span.clip for _, span in taken]))
        for (src, span), f in zip(taken, feats, strict=True):
            name = src.name
            if span.connection != self.connection[name]:  # a new connection: a gap in the video
                if self.connection[name]:
                    self._emit(self.builders[name].close("source lost"), span.ready)
                self.scorers[name].reset()
                self.connection[name] = span.connection
            self.scored[name] += 1
            what = f"{span.start_s:.2f}-{span.end_s:.2f} s of {name}"
            scored = self.scorers[name].score(span.clip, span.start_frame, span.end_frame, span.fps, what, f)
            scored = replace(scored, start_s=span.start_s, end_s=span.end_s)
            if self.on_span is not None:
                self.on_span(name, scored)
            decision = SpanDecision(span.start_s, span.end_s, scored.label, scored.confidence, span.wall,
                                    scored.top, scored.score, self.classifier.score_threshold, scored.why)
            self._emit(self.builders[name].update(decision), span.ready)
            self.span_lat[name].append(time.monotonic() - span.ready)

    # --------------------------------------------------------------------------------------- status
    def status(self) -> dict[str, Any]:
        now = time.monotonic()
        per = {}
        for src in self.sources:
            s = src.stats
            per[src.name] = {"connected": s.connected, "finished": s.finished, "fps": round(s.rate(now), 2),
                             "stream_fps": round(s.fps, 3), "frames": s.frames, "kept": s.kept,
                             "spans": self.scored[src.name], "cut": s.spans,
                             "waiting": src.waiting,
                             "skipped": s.skipped, "reconnects": s.reconnects,
                             "latency_s": percentiles(self.span_lat[src.name]),
                             "open_event": self.builders[src.name].open_label, "error": src.error}
        return {"format": STATUS_FORMAT, "version": 1, "time": iso(time.time()), "rss_mb": rss_mb(),
                "sources": per,
                "sinks": [s.health() for s in self.sinks], "event_latency_s": percentiles(self.event_lat)}

    # ------------------------------------------------------------------------------------------ run
    def _handle_signal(self, signum: int, frame: Any) -> None:
        self._stop.set()
        self._wake.set()

    def run(self) -> WatchReport:
        st = self.settings
        t0, cpu0 = time.monotonic(), time.process_time()
        main = threading.current_thread() is threading.main_thread()
        old = {s: signal.signal(s, self._handle_signal) for s in (signal.SIGINT, signal.SIGTERM)} if main \
            else {}
        next_status = t0 + st.status_every if st.status_every else None
        try:
            for src in self.sources:
                src.start()
            while not self._stop.is_set():
                self._wake.wait(0.25)
                self._wake.clear()
                self._drain_messages()
                if self._stop.is_set():
                    break
                self._maybe_reload()
                taken = [(src, span) for src in self.sources if (span := src.take()) is not None]
                if taken:
                    self._score(taken)
                for src in self.sources:
                    if src.done and src.name not in self._closed_sources:
                        self._closed_sources.add(src.name)
                        self._emit(self.builders[src.name].close("source ended"), None)
                now = time.monotonic()
                if next_status is not None and now >= next_status:
                    print(json.dumps(self.status(), sort_keys=True), file=self.err, flush=True)
                    next_status = now + float(st.status_every or 0)
                if len(self._closed_sources) == len(self.sources):
                    if not any(self.scored.values()) and not self.exit_code:
                        self.exit_code = EXIT_SOURCE
                    break
                if st.duration is not None and now - t0 >= st.duration:
                    break
        finally:
            for src in self.sources:
                src.stop()
            for src in self.sources:
                src.join(timeout=15)
            for b in self.builders.values():
                self._emit(b.close("shutdown"), None)
            sink_health = [s.close() for s in self.sinks]
            self._drain_messages()
            for s, h in old.items():
                signal.signal(s, h)
        seconds = time.monotonic() - t0
        status = self.status()
        return WatchReport(self.exit_code, seconds, status["sources"], sink_health,
                           sum(b.emitted for b in self.builders.values()),
                           sum(b.suppressed for b in self.builders.values()),
                           percentiles([x for d in self.span_lat.values() for x in d]),
                           percentiles(self.event_lat), (time.process_time() - cpu0) / max(seconds, 1e-9),
                           peak_rss_mb(), self.reloads, self.problems)


def peak_rss_mb() -> float:
    """This process's peak resident memory: VmHWM on Linux (getrusage's ru_maxrss would also count the
    parent's pages of a process forked from a large one, e.g. a bench that imported torch), else
    ru_maxrss (macOS reports bytes)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / (1024 * 1024) if sys.platform == "darwin" else r / 1024


def rss_mb() -> float | None:
    """This process's resident memory now (Linux /proc; None elsewhere)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return round(pages * resource.getpagesize() / (1024 * 1024), 1)
