"""Classify clip features against a gallery: few-shot head logits, calibrated confidence, open-set "unknown".

Unequal shots. The heads take ``[N, K, T, C]``, one K for all classes, but a gallery grows label by label.
Labels are grouped by their number of clips and each group runs the head on its own ``[n, K, T, C]``.
That is exact (a class's logit only ever depends on its own support clips, in every head: cca too, whose
attention is per support clip and averaged over a class's shots), so with equal
shots the result is the heads' own, to the last bit of arithmetic order. Padding to the largest K would
be cheaper to write but wrong: padded frames would take a share of the alignment head's softmax (or need
a mask the heads do not have) and would shift the prototype head's mean.

Open set (calibration.py): "unknown" when the best logit (the negative aligned distance to the nearest
label) is below the gallery's calibrated score threshold; a caller's confidence `threshold` replaces that
rule. Two clips are "unknown" whatever the gallery says, because features cannot tell (`content_problem`):
a blank clip (a grey clip's frames lie as close to a faded-out synthetic action as that action's own
clips do: the score threshold rejected it in 7% of 6-label galleries) and a noise clip.

Unlike the training data (device/ood.py): where the model card holds the training features' distribution,
a clip is also "unknown" when the squared Mahalanobis distance of its pooled features to the nearest label's
mean, in the training split's within-action covariance, exceeds the gallery's OOD threshold: the 95%
one-sided prediction bound of a new known clip's distance, from leave-one-out over the gallery's labels
with >= 2 clips (each clip against the mean of its label's other clips), the distances taken as
log-normal, as the floor of the score threshold is. Why this rule, and what it costs: calibration.py.
The check applies whatever the confidence threshold; a card without the distribution (an export without
training data, or from before the check) has none, and `open_set` says so.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..device.ood import NO_CARD_RECORD, FeatureDistribution
from ..device.preprocess import Preprocess
from ..device.settings import HeadConfig
from ..errors import SSTEdgeError
from .calibration import DEFAULT_THRESHOLD, UNKNOWN, ood_scores, softmax, support_logits, white_means
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
    ood_score: float | None = None  # the clip's distance from the training data (None: no check)
    ood_threshold: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "confidence": round(self.confidence, 6), "unknown": self.unknown,
                "why": self.why, "score": round(self.score, 6), "score_threshold": self.score_threshold,
                "ood_score": None if self.ood_score is None else round(self.ood_score, 6),
                "ood_threshold": self.ood_threshold, "threshold": self.threshold, "notes": list(self.notes),
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

    head: 'alignment' (default), 'prototype' or 'cca' (the model's weights), with the gallery model's tau
    and window, or a HeadConfig.
    min_shots: labels with fewer clips are left out and listed in `excluded`.
    threshold: a confidence below which the answer is "unknown", replacing the calibrated score threshold
    (0: every clip gets its nearest label). temperature: overrides the calibration's.
    ood: the model's training-feature distribution (`FewShotRuntime.ood`), for the check of clips unlike
    the training data; None: no check, and `ood_why` says why (`FewShotRuntime.ood_why`).

    Per clip or span, stream and live code call `logits`, `probabilities`, `ood_score` and then
    `why_unknown(confidence, score, ood)` (or `decide(logits, probs, ood)`), smoothing what they smooth.
    """

    labels: list[str]
    supports: list[np.ndarray]
    head: HeadConfig
    temperature: float
    threshold: float
    calibration: dict[str, Any]
    excluded: dict[str, str] = field(default_factory=dict)
    score_threshold: float | None = None  # None: no distance rule (not calibrated, or replaced)
    ood: FeatureDistribution | None = None
    ood_threshold: float | None = None  # None: no check (no distribution, or not calibrated: ood_why)
    ood_why: str = ""
    _means: np.ndarray | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.ood is not None:
            self._means = white_means(self.supports, self.ood)

    @classmethod
    def from_gallery(cls, gallery: Gallery, head: str | HeadConfig | None = None, min_shots: int = 1,
                     threshold: float | None = None, temperature: float | None = None,
                     ood: FeatureDistribution | None = None, ood_why: str = "") -> Classifier:
        if min_shots < 1:
            raise SSTEdgeError(f"min_shots must be >= 1, got {min_shots}")
        if threshold is not None and not 0.0 <= threshold <= 1.0:
            raise SSTEdgeError(f"the confidence threshold must lie in [0, 1], got {threshold}")
        if temperature is not None and not temperature > 0:
            raise SSTEdgeError(f"the temperature must be > 0, got {temperature}")
        hc = gallery.head_config(head or gallery.head.kind)  # default: the model's head; cca: its weights
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
        cal = gallery.calibration(hc, keep, [supports[lb] for lb in keep], ood=ood)
        score_thr = cal.get("score_threshold") if threshold is None else None
        conf_thr = threshold if threshold is not None else cal.get("threshold", DEFAULT_THRESHOLD)
        temp = temperature if temperature is not None else cal["temperature"]
        ood_cal = cal.get("ood") if ood is not None else None
        ood_thr = ood_cal.get("threshold") if ood_cal else None
        if ood is None:
            ood_why = ood_why or NO_CARD_RECORD
        elif ood_thr is None:
            ood_why = str((ood_cal or {}).get("why", "not calibrated"))
        else:
            ood_why = ""
        return cls(keep, [supports[lb] for lb in keep], hc, float(temp), float(conf_thr), cal, excluded,
                   None if score_thr is None else float(score_thr), ood,
                   None if ood_thr is None else float(ood_thr), ood_why)

    def logits(self, features: np.ndarray) -> np.ndarray:
        """Query features ``[Q, T, C]`` (or one clip ``[T, C]``) -> logits ``[Q, N]``."""
        return support_logits(self._query(features), self.supports, self.head)

    def _query(self, features: np.ndarray) -> np.ndarray:
        q = np.asarray(features, np.float32)
        q = q[None] if q.ndim == 2 else q
        width = self.supports[0].shape[1:]
        if q.ndim != 3 or q.shape[1:] != width:
            raise SSTEdgeError(f"query features must be [Q, {width[0]}, {width[1]}] like the gallery's, got "
                               f"{tuple(np.shape(features))}")
        if not np.isfinite(q).all():  # NaN would rank first or last at random and pass any threshold test
            raise SSTEdgeError("query features hold NaN or Infinity: the model is broken or overflows")
        return q

    def ood_score(self, features: np.ndarray) -> np.ndarray | None:
        """How unlike the training data each query ``[Q, T, C]`` (or ``[T, C]``) is: the squared Mahalanobis
        distance ``[Q]`` of its pooled features to the nearest label's mean in the training split's
        within-action covariance (higher: further). None when the model has no training features."""
        if self.ood is None or self._means is None:
            return None
        return ood_scores(self._query(features), self._means, self.ood)

    def probabilities(self, logits: np.ndarray) -> np.ndarray:
        return softmax(logits, self.temperature)

    def why_unknown(self, confidence: float, score: float, ood: float | None = None) -> str:
        """Why a top label of this confidence and logit, from a clip of this `ood_score`, is not the answer
        ("" when it is). Unlike the training data comes first: then no label's distance means much."""
        if ood is not None and self.ood_threshold is not None and ood > self.ood_threshold:
            return (f"unlike the training data: squared Mahalanobis distance {ood:.1f} > "
                    f"{self.ood_threshold:.1f} from every label")
        if self.score_threshold is not None and score < self.score_threshold:
            return f"{SCORE_RULE}: score {score:.3f} < {self.score_threshold:.3f}"
        if confidence < self.threshold:
            return f"confidence {confidence:.2f} < {self.threshold:.2f}"
        return ""

    def decide(self, logits: np.ndarray, probs: np.ndarray | None = None,
               ood: np.ndarray | None = None) -> list[Prediction]:
        """Predictions of logits ``[Q, N]`` (and their `ood_score` ``[Q]``, when there is one)."""
        probs = self.probabilities(logits) if probs is None else probs
        out = []
        for i, (row, p) in enumerate(zip(logits, probs, strict=True)):
            order = np.argsort(-p, kind="stable")
            ranking = [(self.labels[j], float(row[j]), float(p[j])) for j in order]
            top, score, conf = ranking[0]
            d = None if ood is None else float(ood[i])
            why = self.why_unknown(conf, score, d)
            out.append(Prediction(UNKNOWN if why else top, conf, ranking, bool(why), self.threshold, score,
                                  self.score_threshold, why, ood_score=d, ood_threshold=self.ood_threshold))
        return out

    def predict(self, features: np.ndarray) -> list[Prediction]:
        """One Prediction per query clip of ``[Q, T, C]`` (or ``[T, C]``)."""
        return self.decide(self.logits(features), ood=self.ood_score(features))

    def open_set(self) -> str:
        """How "unknown" is decided, in words (classify prints it; it says when nothing is calibrated)."""
        return self._distance_rule() + "; " + self.ood_rule()

    def _distance_rule(self) -> str:
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

    def ood_rule(self) -> str:
        """The check of clips unlike the training data, in words, or why there is none."""
        if self.ood_threshold is None:
            return f"no check of clips unlike the training data ({self.ood_why})"
        rec = self.calibration.get("ood") or {}
        on = f" on {rec['queries']} clips" if isinstance(rec.get("queries"), int) else ""
        clips = f"; training features of {self.ood.clips} clips" if self.ood is not None else ""
        return (f"unknown when unlike the training data: squared Mahalanobis distance > "
                f"{self.ood_threshold:.1f} from every label (95% bound, leave-one-out{on}{clips})")

    def describe(self) -> dict[str, Any]:
        return {"head": self.head.to_dict(), "labels": list(self.labels), "temperature": self.temperature,
                "threshold": self.threshold, "score_threshold": self.score_threshold,
                "calibration": self.calibration.get("method"), "calibrated": self.score_threshold is not None,
                "ood_threshold": self.ood_threshold, "ood": self.ood_rule(),
                "open_set": self.open_set(), "excluded": dict(self.excluded)}


def classify(features: np.ndarray, gallery: Gallery, head: str | HeadConfig = "alignment", min_shots: int = 1,
             threshold: float | None = None, temperature: float | None = None) -> Prediction:
    """One clip's features ``[T, C]`` -> its Prediction (ranked labels, calibrated confidence, unknown).

    For many queries build a `Classifier` once and call `predict`."""
    return Classifier.from_gallery(gallery, head, min_shots, threshold, temperature).predict(features)[0]
