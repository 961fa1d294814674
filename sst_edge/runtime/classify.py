"""Classify clip features against a gallery: few-shot head logits, calibrated confidence, open-set "unknown".

Unequal shots. The heads take ``[N, K, T, C]``, one K for all classes, but a gallery grows label by label.
Labels are grouped by their number of clips and each group runs the head on its own ``[n, K, T, C]``.
That is exact (a class's logit only ever depends on its own support clips, in both heads), so with equal
shots the result is the heads' own, to the last bit of arithmetic order. Padding to the largest K would
be cheaper to write but wrong: padded frames would take a share of the alignment head's softmax (or need
a mask the heads do not have) and would shift the prototype head's mean.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..device.heads import HeadConfig
from ..errors import SSTEdgeError
from .calibration import DEFAULT_THRESHOLD, UNKNOWN, softmax, support_logits
from .gallery import Gallery


# --------------------------------------------------------------------------------------------- results
@dataclass
class Prediction:
    """One query's answer: `label` is the top label, or "unknown" when its confidence < threshold."""

    label: str
    confidence: float
    ranking: list[tuple[str, float, float]]  # (label, logit, calibrated confidence), best first
    unknown: bool = False
    threshold: float = DEFAULT_THRESHOLD

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "confidence": round(self.confidence, 6), "unknown": self.unknown,
                "threshold": self.threshold,
                "ranking": [{"label": lb, "score": round(s, 6), "confidence": round(p, 6)}
                            for lb, s, p in self.ranking]}


@dataclass
class Classifier:
    """The gallery's labels, supports and calibration, ready for queries (built once, used many times).

    head: 'alignment' (default) or 'prototype', with the gallery model's tau and window, or a HeadConfig.
    min_shots: labels with fewer clips are left out and listed in `excluded`.
    threshold / temperature: override the calibration's.
    """

    labels: list[str]
    supports: list[np.ndarray]
    head: HeadConfig
    temperature: float
    threshold: float
    calibration: dict[str, Any]
    excluded: dict[str, str] = field(default_factory=dict)

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
        return cls(keep, [supports[lb] for lb in keep], hc,
                   float(temperature if temperature is not None else cal["temperature"]),
                   float(threshold if threshold is not None else cal["threshold"]), cal, excluded)

    def logits(self, features: np.ndarray) -> np.ndarray:
        """Query features ``[Q, T, C]`` (or one clip ``[T, C]``) -> logits ``[Q, N]``."""
        q = np.asarray(features, np.float32)
        q = q[None] if q.ndim == 2 else q
        width = self.supports[0].shape[1:]
        if q.ndim != 3 or q.shape[1:] != width:
            raise SSTEdgeError(f"query features must be [Q, {width[0]}, {width[1]}] like the gallery's, got "
                               f"{tuple(np.shape(features))}")
        return support_logits(q, self.supports, self.head)

    def probabilities(self, logits: np.ndarray) -> np.ndarray:
        return softmax(logits, self.temperature)

    def decide(self, logits: np.ndarray, probs: np.ndarray | None = None) -> list[Prediction]:
        probs = self.probabilities(logits) if probs is None else probs
        out = []
        for row, p in zip(logits, probs, strict=True):
            order = np.argsort(-p, kind="stable")
            ranking = [(self.labels[i], float(row[i]), float(p[i])) for i in order]
            top, conf = ranking[0][0], ranking[0][2]
            unknown = conf < self.threshold
            out.append(Prediction(UNKNOWN if unknown else top, conf, ranking, unknown, self.threshold))
        return out

    def predict(self, features: np.ndarray) -> list[Prediction]:
        """One Prediction per query clip of ``[Q, T, C]`` (or ``[T, C]``)."""
        return self.decide(self.logits(features))

    def describe(self) -> dict[str, Any]:
        return {"head": self.head.to_dict(), "labels": list(self.labels), "temperature": self.temperature,
                "threshold": self.threshold, "calibration": self.calibration.get("method"),
                "excluded": dict(self.excluded)}


def classify(features: np.ndarray, gallery: Gallery, head: str | HeadConfig = "alignment", min_shots: int = 1,
             threshold: float | None = None, temperature: float | None = None) -> Prediction:
    """One clip's features ``[T, C]`` -> its Prediction (ranked labels, calibrated confidence, unknown).

    For many queries build a `Classifier` once and call `predict`."""
    return Classifier.from_gallery(gallery, head, min_shots, threshold, temperature).predict(features)[0]
