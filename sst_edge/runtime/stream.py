"""Classify a long video with a sliding window: (start, end, label, confidence) per span, as it goes.

A span (the stretch of video one classification sees: `--span`, not the alignment head's `window`) covers
W frames (or seconds) and advances by a stride; the model's T frames are sampled at the segment centres
of the span, exactly as `load_clip` samples a whole clip, so a span that covers one
enrolled-style clip sees what enrollment saw. A final span is aligned to the end of the video so its tail
is covered. Smoothing averages the calibrated class probabilities of the last `smooth` spans (causal:
it needs no future span, so results still stream), which steadies the label between actions at the cost
of reacting `smooth - 1` spans late; the open-set scores (the logits, and the distance from the training
data where the model has its training features) are averaged over the same spans.

Decoding overlaps inference: a background thread decodes and preprocesses the next spans into a bounded
queue while the current one is embedded and matched (both the decoders and ONNX Runtime release the GIL).
The thread owns its decoder; nothing that holds a file crosses threads.
"""

from __future__ import annotations

import math
import queue
import threading
from collections import deque
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..device.decoders import VideoDecoder, make_decoder
from ..device.preprocess import frames_to_array, resized_shape, sample_indices
from ..errors import SSTEdgeError
from .calibration import UNKNOWN
from .classify import Classifier, content_problem
from .engine import FewShotRuntime

_END = object()


@dataclass(frozen=True)
class StreamSpan:
    start_s: float
    end_s: float
    label: str  # after smoothing; "unknown" below the threshold
    confidence: float
    raw_label: str  # this span alone
    raw_confidence: float
    start_frame: int
    end_frame: int  # exclusive
    top: str = ""  # the nearest label after smoothing, also when `label` is "unknown"
    score: float = 0.0  # its smoothed logit (negative aligned distance), against the calibrated threshold
    why: str = ""  # why the span is "unknown" ("" when it is not)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def span_starts(num_frames: int, span: int, stride: int) -> list[int]:
    """First frames of the spans: every `stride` frames, plus one ending at the last frame if needed."""
    if span < 1 or stride < 1:
        raise SSTEdgeError(f"span and stride must be >= 1 frame, got span {span}, stride {stride}")
    if num_frames <= span:
        return [0]
    starts = list(range(0, num_frames - span + 1, stride))
    if starts[-1] + span < num_frames:
        starts.append(num_frames - span)
    return starts


def _put(q: queue.Queue, stop: threading.Event, item: Any) -> bool:
    while not stop.is_set():
        try:
            q.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


def _decode_spans(q: queue.Queue, stop: threading.Event, decoder: VideoDecoder, path: Path,
                    runtime: FewShotRuntime, starts: list[int], span: int, num_frames: int,
                    size: tuple[int, int]) -> None:
    pre = runtime.card.preprocess
    try:
        for s in starts:
            n = min(span, num_frames - s)
            idx = s + sample_indices(n, pre.frames, train=False)
            clip = frames_to_array(decoder.read(path, idx, size), pre)
            if not _put(q, stop, (s, s + n, clip)):
                return
        _put(q, stop, _END)
    except BaseException as e:  # handed to the consumer, which re-raises it
        _put(q, stop, e)


class SpanScorer:
    """One span's clip -> its StreamSpan: embedding, head, calibrated confidence, causal smoothing and the
    open-set decision. `classify --stream` and `watch` both score spans here, so a live span is decided
    exactly as the same span of the recorded file (for `watch`, one scorer per source)."""

    def __init__(self, runtime: FewShotRuntime, classifier: Classifier, smooth: int = 1):
        if smooth < 1:
            raise SSTEdgeError(f"smooth must be >= 1, got {smooth}")
        self.runtime, self.classifier = runtime, classifier
        self.recent: deque[np.ndarray] = deque(maxlen=smooth)
        self.recent_ood: deque[float] = deque(maxlen=smooth)

    def reset(self) -> None:
        """Forget the smoothing history (a gap in the video: a reconnect, or a new gallery)."""
        self.recent.clear()
        self.recent_ood.clear()

    def score(self, clip: np.ndarray, s: int, e: int, fps: float, what: str,
              features: np.ndarray | None = None) -> StreamSpan:
        """Frames [s, e) of a video at `fps`, preprocessed as `clip` ``[T, 3, H, W]``; `features` when the
        caller embedded the clip already (several sources' spans in one batch)."""
        classifier = self.classifier
        feats = self.runtime.finite(self.runtime.embed(clip[None]) if features is None else features[None],
                                    what)
        logits = classifier.logits(feats)
        probs = classifier.probabilities(logits)
        ood = classifier.ood_score(feats)  # None: the model has no training features
        raw = classifier.decide(logits, probs, ood)[0]
        blank = content_problem(clip, self.runtime.card.preprocess)  # nothing to see: unknown, unsmoothed
        if blank:
            raw.reject(blank)
        self.recent.append(np.stack([probs[0], logits[0]]))  # the open-set scores are smoothed with them
        if ood is not None:
            self.recent_ood.append(float(ood[0]))
        mean, mean_logits = np.mean(self.recent, axis=0)
        top = int(np.argmax(mean))
        conf = float(mean[top])
        mean_ood = float(np.mean(self.recent_ood)) if self.recent_ood else None
        why = blank or classifier.why_unknown(conf, float(mean_logits[top]), mean_ood)
        label = UNKNOWN if why else classifier.labels[top]
        return StreamSpan(round(s / fps, 4), round(e / fps, 4), label, conf, raw.label, raw.confidence, s, e,
                          classifier.labels[top], float(mean_logits[top]), why)


def stream_video(runtime: FewShotRuntime, classifier: Classifier, path: str | Path, span: float = 2.0,
                 stride: float = 1.0, unit: str = "seconds", smooth: int = 1,
                 prefetch: int = 2) -> Iterator[StreamSpan]:
    """Yield a StreamSpan per span of `path` (span and stride in `unit`: 'seconds' or 'frames')."""
    if unit not in ("seconds", "frames"):
        raise SSTEdgeError(f"unit must be 'seconds' or 'frames', got {unit!r}")
    if smooth < 1 or prefetch < 1:
        raise SSTEdgeError(f"smooth and prefetch must be >= 1, got {smooth} and {prefetch}")
    for name, value in (("span", span), ("stride", stride)):
        if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
            raise SSTEdgeError(f"the {name} must be a finite number > 0, got {value!r}")
    path = Path(path)
    decoder = make_decoder(runtime.decoder_name)  # this generator's own; used by the decode thread only
    info = decoder.info(path)
    fps = info.fps
    if unit == "seconds":
        if not fps > 0:
            raise SSTEdgeError("the clip has no frame rate (a folder of frames has none): give the span "
                               "and stride in frames (--unit frames)", path)
        w, st = int(round(span * fps)), int(round(stride * fps))
    else:
        w, st = int(span), int(stride)
        fps = fps if fps > 0 else 1.0
    starts = span_starts(info.num_frames, w, st)
    size = resized_shape(info.height, info.width, runtime.card.preprocess.resize)
    q: queue.Queue = queue.Queue(maxsize=prefetch)
    stop = threading.Event()
    worker = threading.Thread(target=_decode_spans, name="sst-edge-decode", daemon=True,
                              args=(q, stop, decoder, path, runtime, starts, w, info.num_frames, size))
    worker.start()
    scorer = SpanScorer(runtime, classifier, smooth)
    try:
        while True:
            item = q.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            s, e, clip = item
            yield scorer.score(clip, s, e, fps, f"frames {s}-{e} of {path}")
    finally:
        stop.set()
        worker.join(timeout=5)
