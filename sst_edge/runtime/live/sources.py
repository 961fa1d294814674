"""Live sources: cameras, network streams and files, opened with PyAV, cut into spans as frames arrive.

One thread per source owns its PyAV container (nothing that holds a stream crosses threads). It decodes,
resizes each kept frame on arrival (the decoders' own filter graph, so pixels equal `classify`'s), keeps a
ring of the last span's frames, and when a span's last frame is in, samples and preprocesses the model's
T frames exactly as `classify --stream` does and publishes the clip in a one-span slot. The slot is the
real-time policy: a live source that publishes while the previous span is still waiting replaces it and
counts it skipped (nothing queues without bound, memory stays one ring and one clip per source); a file
played as fast as possible waits for the slot instead, so every span is scored.

Span grid. A connection's frames carry times t (from their pts, relative to its first frame). With
W = round(span * fps) and S = round(stride * fps) frames, span j holds the frames with
t in [(jS - 1/2) / fps, (jS + W - 1/2) / fps): for a constant frame rate exactly frames jS .. jS+W-1, the
spans of `classify --stream` (which also adds a last span ending at the file's last frame; so does a file
source at its end). Dropped frames (`max_fps`, network loss) leave a span with fewer frames, sampled
the same way. A reconnect starts a new grid, placed on the source's wall-clock time since it first opened.

Faults. Opening or reading fails, or a live stream ends: the thread reports it (`problems`), waits with
exponential backoff (`BACKOFF_START`, doubling up to `backoff_max`) and reconnects, until `max_reconnects`
(None: forever) or `stop()`. A file ends once.
"""

from __future__ import annotations

import math
import re
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av
import numpy as np

from ...device.decoders import _Converter
from ...device.preprocess import Preprocess, frames_to_array, resized_shape, sample_indices
from ...device.probe import av_reason, probe_video
from ...errors import SSTEdgeError
from ...text import redact_url

NETWORK_SCHEMES = ("rtsp", "rtsps", "udp", "tcp", "http", "https", "rtmp", "srt")
V4L2 = re.compile(r"^/dev/video\d+$")
BACKOFF_START = 0.5  # seconds before the first reconnect
OPEN_TIMEOUT = 10.0  # seconds for a stream to open, and for a frame to arrive once open
FALLBACK_FPS = 25.0  # a stream that states no frame rate (then measured from its first frames)


@dataclass(frozen=True)
class SourceSpec:
    """What `--source` named: kind 'file' | 'network' | 'v4l2', the address, and a name safe to print
    (a URL's password is never shown: events and logs carry the name)."""

    kind: str
    address: str
    name: str

    @property
    def live(self) -> bool:
        return self.kind != "file"


def parse_source(text: str) -> SourceSpec:
    """`--source` -> SourceSpec: an rtsp(s)/udp/tcp/http(s)/rtmp/srt URL, a V4L2 device /dev/videoN, or a
    video file. Anything else is refused, naming it."""
    if not isinstance(text, str) or not text.strip():
        raise SSTEdgeError(f"a source must be a URL, /dev/videoN or a video file, got {text!r}")
    m = re.match(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://", text)
    if m:
        scheme = m.group(1).lower()
        if scheme == "file":
            return parse_source(text[len("file://"):])
        if scheme not in NETWORK_SCHEMES:
            raise SSTEdgeError(f"source {redact_url(text)}: unsupported scheme '{scheme}://' (use one of "
                               f"{', '.join(s + '://' for s in NETWORK_SCHEMES)}, /dev/videoN or a file)")
        if not text[m.end():].strip("/"):
            raise SSTEdgeError(f"source {text}: the URL names no host")
        return SourceSpec("network", text, redact_url(text))
    if text.startswith("/dev/video") or V4L2.match(text):
        if not V4L2.match(text):
            raise SSTEdgeError(f"source {text}: a V4L2 camera is /dev/videoN (N a number)")
        return SourceSpec("v4l2", text, text)
    path = Path(text)
    if path.is_dir():
        raise SSTEdgeError("a folder of frames has no frame rate to play: watch takes videos, cameras and "
                           "streams (classify --stream --unit frames takes folders)", path)
    if not path.is_file():
        raise SSTEdgeError("no such video file (and not a URL or /dev/videoN)", path)
    return SourceSpec("file", str(path), str(path))


def open_options(spec: SourceSpec) -> dict[str, Any]:
    """av.open keyword arguments per kind: RTSP over TCP (no loss, no reordering on a LAN), V4L2 by
    format, UDP with a larger buffer that drops instead of failing when the reader falls behind."""
    kw: dict[str, Any] = {"metadata_errors": "ignore"}
    if spec.kind == "v4l2":
        kw["format"] = "v4l2"
    elif spec.kind == "network":
        scheme = spec.address.split("://", 1)[0].lower()
        opts = {"rtsp_transport": "tcp"} if scheme in ("rtsp", "rtsps") else {}
        if scheme == "udp":
            opts.update({"fifo_size": "1000000", "overrun_nonfatal": "1"})
        kw["options"] = opts
        kw["timeout"] = (OPEN_TIMEOUT, OPEN_TIMEOUT)
    return kw


@dataclass
class Span:
    """One span of one source, preprocessed and ready to embed."""

    clip: np.ndarray  # float32 [T, 3, size, size]
    start_s: float  # source time (seconds since the source first opened)
    end_s: float
    start_frame: int  # in this connection
    end_frame: int  # exclusive
    connection: int  # 1 for the first connection, +1 per reconnect
    ready: float  # time.monotonic() when its last frame arrived (latency is measured from here)
    wall: float  # time.time() of that frame (events carry wall-clock times)
    fps: float


@dataclass
class SourceStats:
    frames: int = 0  # decoded
    kept: int = 0  # resized into the ring (frames beyond --max-fps are not)
    spans: int = 0  # published
    skipped: int = 0  # replaced in the slot before inference took them
    reconnects: int = 0
    connected: bool = False
    finished: bool = False
    fps: float = 0.0  # the stream's frame rate as stated (or measured)
    arrivals: deque[float] = field(default_factory=lambda: deque(maxlen=256))  # monotonic, kept frames

    def rate(self, now: float, window: float = 5.0) -> float:
        """Kept frames per second over the last `window` seconds."""
        recent = [t for t in self.arrivals if now - t <= window]
        if len(recent) < 2:
            return 0.0
        return (len(recent) - 1) / max(recent[-1] - recent[0], 1e-6)


class LiveSource:
    """A source's reader thread and its one-span slot (see the module docstring).

    on_problem(name, text): called from the thread for each fault (the watch loop prints them);
    notify(): called after each publish (wakes the watch loop)."""

    def __init__(self, spec: SourceSpec, preprocess: Preprocess, span: float, stride: float, *,
                 realtime: bool = False, max_fps: float | None = None, backoff_max: float = 10.0,
                 max_reconnects: int | None = None,
                 on_problem: Callable[[str, str], None] | None = None,
                 notify: Callable[[], None] | None = None):
        for what, v in (("span", span), ("stride", stride)):
            if not (math.isfinite(v) and v > 0):
                raise SSTEdgeError(f"the {what} must be a finite number of seconds > 0, got {v!r}")
        if max_fps is not None and not (math.isfinite(max_fps) and max_fps > 0):
            raise SSTEdgeError(f"--max-fps must be a number > 0, got {max_fps!r}")
        self.spec, self.pre = spec, preprocess
        self.span, self.stride = float(span), float(stride)
        self.realtime = realtime or spec.live  # live sources arrive at their own rate
        self.max_fps, self.backoff_max, self.max_reconnects = max_fps, backoff_max, max_reconnects
        self.on_problem = on_problem or (lambda name, text: None)
        self.notify = notify or (lambda: None)
        self.stats = SourceStats()
        self._slot: Span | None = None
        self._lock = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"sst-edge-source-{spec.name}", daemon=True)
        self._first_wall: float | None = None  # monotonic time the source first delivered a frame
        self.rotation = probe_video(spec.address).rotation if spec.kind == "file" else 0
        self.error: str = ""  # the last problem, for status

    @property
    def name(self) -> str:
        return self.spec.name

    # ------------------------------------------------------------------------------- consumer side
    def start(self) -> LiveSource:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        with self._lock:
            self._lock.notify_all()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def take(self) -> Span | None:
        """The waiting span (and empty the slot), or None."""
        with self._lock:
            span, self._slot = self._slot, None
            self._lock.notify_all()
            return span

    @property
    def waiting(self) -> int:
        """1 while a span waits in the slot (at a stop: cut, neither scored nor skipped)."""
        with self._lock:
            return int(self._slot is not None)

    @property
    def done(self) -> bool:
        """Finished and nothing left to take."""
        with self._lock:
            return self.stats.finished and self._slot is None

    # -------------------------------------------------------------------------------- thread side
    def _publish(self, span: Span) -> bool:
        with self._lock:
            if self.realtime:
                if self._slot is not None:
                    self.stats.skipped += 1
            else:
                while self._slot is not None and not self._stop.is_set():
                    self._lock.wait(0.1)
                if self._stop.is_set():
                    return False
            self._slot = span
            self.stats.spans += 1
        self.notify()
        return True

    def _problem(self, text: str) -> None:
        self.error = text
        self.on_problem(self.name, text)

    def _run(self) -> None:
        failures, connection = 0, 0
        try:
            while not self._stop.is_set():
                connection += 1
                delivered, why = self._connection(connection)
                if self._stop.is_set() or (self.spec.kind == "file" and why == ""):
                    break
                if self.spec.kind == "file":  # a file that cannot be read will not get better
                    self._problem(why)
                    break
                failures = 0 if delivered else failures + 1
                if self.max_reconnects is not None and self.stats.reconnects >= self.max_reconnects:
                    self._problem(f"{why}; gave up after {self.stats.reconnects} reconnects")
                    break
                delay = min(self.backoff_max, BACKOFF_START * 2 ** max(failures - 1, 0))
                self._problem(f"{why}; reconnecting in {delay:.1f} s")
                if self._stop.wait(delay):
                    break
                self.stats.reconnects += 1
        except BaseException as e:  # never a silent death: the loop reports it and goes on
            self._problem(f"reader failed: {type(e).__name__}: {e}")
        finally:
            with self._lock:
                self.stats.finished = True
                self.stats.connected = False
                self._lock.notify_all()
            self.notify()

    def _connection(self, connection: int) -> tuple[bool, str]:
        """Read one connection to its end: (whether it delivered frames, why it ended; "" for a file's
        end or a stop)."""
        try:
            container = av.open(self.spec.address, **open_options(self.spec))
        except (av.FFmpegError, OSError) as e:
            return False, f"cannot open: {av_reason(e) if isinstance(e, av.FFmpegError) else e}"
        delivered = False
        try:
            streams = container.streams.video
            if not streams:
                return False, "no video stream"
            stream = streams[0]
            stream.thread_type = "AUTO"
            self.stats.connected = True
            delivered = self._frames(container, stream, connection)
            if self._stop.is_set() or self.spec.kind == "file":
                return delivered, ""
            return delivered, "the stream ended"
        except (av.FFmpegError, OSError) as e:
            return delivered, f"read failed: {av_reason(e) if isinstance(e, av.FFmpegError) else e}"
        finally:
            self.stats.connected = False
            container.close()

    def _frames(self, container: Any, stream: Any, connection: int) -> bool:
        rate = stream.average_rate or stream.guessed_rate
        fps = float(rate) if rate else 0.0
        tb = float(stream.time_base) if stream.time_base else 0.0
        ring: deque[tuple[float, np.ndarray]] = deque()
        converter: _Converter | None = None
        shape = None
        t0_pts: int | None = None
        n = 0  # frames decoded in this connection
        j = 0  # next span of the grid
        last_kept = -math.inf
        play0: float | None = None  # monotonic time of this connection's first frame
        offset = 0.0  # this connection's place on the source's timeline
        W = S = 0
        pending_times: list[float] = []  # frame times before the frame rate is known
        for frame in container.decode(stream):
            if self._stop.is_set():
                return n > 0
            now = time.monotonic()
            if t0_pts is None:
                t0_pts = frame.pts if frame.pts is not None else 0
                play0 = now
                if self._first_wall is None:
                    self._first_wall = now
                offset = now - self._first_wall
            t = (frame.pts - t0_pts) * tb if (frame.pts is not None and tb) else n / (fps or FALLBACK_FPS)
            n += 1
            self.stats.frames += 1
            if not fps:  # measured from the first frames' times when the stream states none
                pending_times.append(t)
                if len(pending_times) < 8 and t < 1.0:
                    continue
                gaps = np.diff(pending_times)
                fps = 1.0 / float(np.median(gaps)) if len(gaps) and np.median(gaps) > 0 else FALLBACK_FPS
            if not W:
                W, S = max(1, round(self.span * fps)), max(1, round(self.stride * fps))
                self.stats.fps = fps
            if self.realtime and not self.spec.live and play0 is not None:  # a file at its own rate
                wait = play0 + t - time.monotonic()
                if wait > 0 and self._stop.wait(wait):
                    return True
                now = time.monotonic()
            if self.max_fps is not None and t - last_kept < 1.0 / self.max_fps - 0.5 / fps:
                continue
            last_kept = t
            if (frame.height, frame.width) != shape:  # the first frame, or the camera changed its size
                shape = (frame.height, frame.width)
                h, w = shape if self.rotation in (0, 180) else shape[::-1]
                converter = _Converter(stream, self.rotation, *resized_shape(h, w, self.pre.resize))
            assert converter is not None
            ring.append((t, converter(frame)))
            self.stats.kept += 1
            self.stats.arrivals.append(now)
            half = 0.5 / fps
            while True:  # every span whose last frame is in
                a, b = j * S / fps - half, (j * S + W) / fps - half
                if t < b - 1.0 / fps:
                    break
                if not self._cut(ring, a, b, j * S, j * S + W, connection, offset, fps, now):
                    return True
                j += 1
            keep_from = j * S / fps - half  # frames before the next span; the last W stay for a file's tail
            while len(ring) > W and ring[0][0] < keep_from:
                ring.popleft()
        if n and self.spec.kind == "file" and not self._stop.is_set():  # the tail, as classify --stream
            self._tail(ring, n, W, S, j, connection, offset, fps)
        return n > 0

    def _tail(self, ring: deque, n: int, W: int, S: int, j: int, connection: int, offset: float,
              fps: float) -> None:
        """A file's last span, ending at its last frame, when the grid left frames uncovered."""
        last = (j - 1) * S + W if j else 0
        if j and last >= n:
            return
        s = max(0, n - W)
        self._cut(ring, (s - 0.5) / fps, (n - 0.5) / fps, s, n, connection, offset, fps, time.monotonic())

    def _cut(self, ring: deque, a: float, b: float, s: int, e: int, connection: int, offset: float,
             fps: float, now: float) -> bool:
        frames = [f for t, f in ring if a <= t < b]
        if not frames:
            return True
        idx = sample_indices(len(frames), self.pre.frames, train=False)
        clip = frames_to_array(np.stack([frames[i] for i in idx]), self.pre)
        return self._publish(Span(clip, round(offset + s / fps, 4), round(offset + e / fps, 4), s, e,
                                  connection, now, time.time(), fps))
