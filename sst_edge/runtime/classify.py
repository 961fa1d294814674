"""Classify clip features against a gallery: few-shot head logits, calibrated confidence, open-set "unknown".

Unequal shots. The heads take ``[N, K, T, C]``, one K for all classes, but a gallery grows label by label.
Labels are grouped by their number of clips and each group runs the head on its own ``[n, K, T, C]``.
That is exact (a class's logit only ever depends on its own support clips, in both heads), so with equal
shots the result is the heads' own, to the last bit of arithmetic order. Padding to the largest K would
be cheaper to write but wrong: padded frames would take a share of the alignment head's softmax (or need
a mask the heads do not have) and would shift the prototype head's mean.

Open set (calibration.py): "unknown" when the best logit (the negative aligned distance to the nearest
label) is below the gallery's calibrated score threshold; a caller's confidence `threshold` replaces that
rule. Two clips are "unknown" whatever the gallery says, because features cannot tell (`content_problem`):
a blank clip (a grey clip's frames lie as close to a faded-out synthetic action as that action's own
clips do: the score threshold rejected it in 7% of 6-label galleries) and a noise clip.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..device.preprocess import Preprocess
from ..device.settings import HeadConfig
from ..errors import SSTEdgeError
from .calibration import DEFAULT_THRESHOLD, UNKNOWN, softmax, support_logits
from .gallery import Gallery

# A clip whose every channel varies by less than this many 8-bit levels shows nothing (H.264 leaves a
# grey or black clip within 1 level).
BLANK_LEVELS = 2.0
# Neighbouring pixels of any picture are correlated: >= 0.92 in synthetic clips, >= 0.89 in a camera pan
# over a natural-statistics (1/f) texture, 0.99 in tests' moving_frames; uniform noise (64x86, H.264,
# resized and cropped like the model's input) 0.41-0.43.
NOISE_CORRELATION = 0.5
SCORE_RULE = "far from every label"  # the start of the calibrated score rule's `why` (watch's hysteresis)


def content_problem(clip: np.ndarray, pre: Preprocess) -> str:
    """Why a preprocessed clip ``[T, 3, H, W]`` holds nothing to recognise ("" if it may): blank, or noise."""
    x = np.asarray(clip, np.float64) * (255.0 * np.asarray(pre.std))[None, :, None, None]
    spread = float(x.std(axis=(0, 2, 3)).max())
    if spread < BLANK_LEVELS:
        return f"blank clip: its pixels vary by {spread:.1f} levels (< {BLANK_LEVELS:g})"
    a = x - x.mean(axis=(2, 3), keepdims=True)
    r = [(u * v).sum() / max(np.sqrt((u * u).sum() * (v * v).sum()), 1e-12)
         for u, v in ((a[..., 1:], a[..., :-1]), (a[..., 1:, :], a[..., :-1, :]))]
    corr = float(np.mean(r))
    if corr < NOISE_CORRELATION:
        return f"noise: neighbouring pixels are uncorrelated (r = {corr:.2f} < {NOISE_CORRELATION:g})"
    return ""


def short_note(num_frames: int, frames: int) -> str:
    return (f"the video has {num_frames} frame{'s' * (num_frames != 1)}, fewer than the model's {frames}: "
            "frames are repeated to fill them, so the answer is less reliable")


# --------------------------------------------------------------------------------------------- results
@dataclass
class Prediction:
    """One query's answer: `label` is the top label, or "unknown" (then `why` says why).

    confidence: the top label's calibrated confidence, also when the answer is "unknown" (it compares the
    labels; it does not say whether the clip is one of them: the score does). score: the top label's logit
    (negative aligned distance). notes: caveats that do not change the answer (a short video)."""

    label: str
    confidence: float
    ranking: list[tuple[str, float, float]]  # (label, logit, calibrated confidence), best first
    unknown: bool = False
    threshold: float = DEFAULT_THRESHOLD
    score: float = 0.0
    score_threshold: float | None = None
    why: str = ""
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "confidence": round(self.confidence, 6), "unknown": self.unknown,
                "why": self.why, "score": round(self.score, 6), "score_threshold": self.score_threshold,
                "threshold": self.threshold, "notes": list(self.notes),
                "ranking": [{"label": lb, "score": round(s, 6), "confidence": round(p, 6)}
                            for lb, s, p in self.ranking]}

    def reject(self, why: str) -> Prediction:
        """This prediction made "unknown" for `why` (kept: the ranking, which still lists the nearest)."""
        self.label, self.unknown, self.why = UNKNOWN, True, why
        return self

    def check_clip(self, clip: np.ndarray, pre: Preprocess, num_frames: int) -> Prediction:
        """This prediction of the preprocessed `clip`, made "unknown" when the clip holds nothing to
        recognise, with a note when its video has fewer frames than the model takes."""
        why = content_problem(clip, pre)
        if why:
            self.reject(why)
        if num_frames < pre.frames:
            self.notes.append(short_note(num_frames, pre.frames))
        return self


@dataclass
class Classifier:
    """The gallery's labels, supports and calibration, ready for queries (built once, used many times).

    head: 'alignment' (default) or 'prototype', with the gallery model's tau and window, or a HeadConfig.
    min_shots: labels with fewer clips are left out and listed in `excluded`.
    threshold: a confidence below which the answer is "unknown", replacing the calibrated score threshold
    (0: every clip gets its nearest label). temperature: overrides the calibration's.
    """

    labels: list[str]
    supports: list[np.ndarray]
    head: HeadConfig
    temperature: float
    threshold: float
    calibration: dict[str, Any]
    excluded: dict[str, str] = field(default_factory=dict)
    score_threshold: float | None = None  # None: no distance rule (not calibrated, or replaced)

    @classmethod
    def from_gallery(cls, gallery: Gallery, head: str | HeadConfig | None = None, min_shots: int = 1,
                     threshold: float | None = None, temperature: float | None = None) -> Classifier:
        if min_shots < 1:
            raise SSTEdgeError(f"min_shots must be >= 1, got {min_shots}")
        if threshold is not None and not 0.0 <= threshold <= 1.0:
            raise SSTEdgeError(f"the confidence threshold must lie in [0, 1], got {threshold}")
        if temperature is not None and not temperature > 0:
            raise SSTEdgeError(f"the temperature must be > 0, got {temperature}")
        hc = head if isinstance(head, HeadConfig) else HeadConfig(head or "alignment", gallery.head.tau,
                                                                    gallery.head.window)
        counts = {label: len(recs) for label, recs in gallery.labels.items()}
        excluded = {lb: f"{k} clip{'s' * (k != 1)}, fewer than the minimum of {min_shots} shots"
                    for lb, k in counts.items() if k < min_shots}
        keep = [lb for lb in counts if lb not in excluded]
        if not keep:
            why = (f"all {len(counts)} labels have fewer than {min_shots} clips" if counts
                   else "it holds no label: enroll clips first")
            raise SSTEdgeError(f"nothing to classify against: {why}", gallery.path,
                               [f"'{lb}': {r}" for lb, r in excluded.items()])
        supports = gallery.supports(keep)
        cal = gallery.calibration(hc, keep, [supports[lb] for lb in keep])
        score_thr = cal.get("score_threshold") if threshold is None else None
        conf_thr = threshold if threshold is not None else cal.get("threshold", DEFAULT_THRESHOLD)
        temp = temperature if temperature is not None else cal["temperature"]
        return cls(keep, [supports[lb] for lb in keep], hc, float(temp), float(conf_thr), cal, excluded,
                   None if score_thr is None else float(score_thr))

    def logits(self, features: np.ndarray) -> np.ndarray:
        """Query features ``[Q, T, C]`` (or one clip ``[T, C]``) -> logits ``[Q, N]``."""
        q = np.asarray(features, np.float32)
        q = q[None] if q.ndim == 2 else q
        width = self.supports[0].shape[1:]
        if q.ndim != 3 or q.shape[1:] != width:
            raise SSTEdgeError(f"query features must be [Q, {width[0]}, {width[1]}] like the gallery's, got "
                               f"{tuple(np.shape(features))}")
        if not np.isfinite(q).all():  # NaN would rank first or last at random and pass any threshold test
            raise SSTEdgeError("query features hold NaN or Infinity: the model is broken or overflows")
        return support_logits(q, self.supports, self.head)

    def probabilities(self, logits: np.ndarray) -> np.ndarray:
        return softmax(logits, self.temperature)

    def why_unknown(self, confidence: float, score: float) -> str:
        """Why a top label of this confidence and logit is not the answer ("" when it is)."""
        if self.score_threshold is not None and score < self.score_threshold:
            return f"{SCORE_RULE}: score {score:.3f} < {self.score_threshold:.3f}"
        if confidence < self.threshold:
            return f"confidence {confidence:.2f} < {self.threshold:.2f}"
        return ""

    def decide(self, logits: np.ndarray, probs: np.ndarray | None = None) -> list[Prediction]:
        probs = self.probabilities(logits) if probs is None else probs
        out = []
        for row, p in zip(logits, probs, strict=True):
            order = np.argsort(-p, kind="stable")
            ranking = [(self.labels[i], float(row[i]), float(p[i])) for i in order]
            top, score, conf = ranking[0]
            why = self.why_unknown(conf, score)
            out.append(Prediction(UNKNOWN if why else top, conf, ranking, bool(why), self.threshold, score,
                                  self.score_threshold, why))
        return out

    def predict(self, features: np.ndarray) -> list[Prediction]:
        """One Prediction per query clip of ``[Q, T, C]`` (or ``[T, C]``)."""
        return self.decide(self.logits(features))

    def open_set(self) -> str:
        """How "unknown" is decided, in words (classify prints it; it says when nothing is calibrated)."""
        cal = self.calibration
        if self.score_threshold is not None:
            extra = f", and confidence < {self.threshold:.3f}" if self.threshold > 0 else ""
            return (f"unknown when the best score < {self.score_threshold:.3f}{extra} ({cal.get('method')} "
                    f"calibration on {cal.get('queries')} clips: keeps {cal.get('known_accepted', 0):.0%} of "
                    "them)")
        if cal.get("score_threshold") is not None:  # replaced by the caller's confidence threshold
            return f"unknown when confidence < {self.threshold:.3f} (set by the caller)"
        why = cal.get("why", "no calibration")
        extra = f"; unknown when confidence < {self.threshold:.3f}" if self.threshold > 0 else \
            ": every clip gets its nearest label"
        return f"open-set threshold NOT calibrated ({why}){extra}"

    def describe(self) -> dict[str, Any]:
        return {"head": self.head.to_dict(), "labels": list(self.labels), "temperature": self.temperature,
                "threshold": self.threshold, "score_threshold": self.score_threshold,
                "calibration": self.calibration.get("method"), "calibrated": self.score_threshold is not None,
                "open_set": self.open_set(), "excluded": dict(self.excluded)}


def classify(features: np.ndarray, gallery: Gallery, head: str | HeadConfig = "alignment", min_shots: int = 1,
             threshold: float | None = None, temperature: float | None = None) -> Prediction:
    """One clip's features ``[T, C]`` -> its Prediction (ranked labels, calibrated confidence, unknown).

    For many queries build a `Classifier` once and call `predict`."""
    return Classifier.from_gallery(gallery, head, min_shots, threshold, temperature).predict(features)[0]
