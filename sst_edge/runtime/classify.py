"""Classify clip features against a gallery: few-shot head logits, calibrated confidence, open-set "unknown".

Unequal shots. The heads take ``[N, K, T, C]``, one K for all classes, but a gallery grows label by label.
Labels are grouped by their number of clips and each group runs the head on its own ``[n, K, T, C]``.
That is exact (a class's logit only ever depends on its own support clips, in both heads), so with equal
shots the result is the heads' own, to the last bit of arithmetic order. Padding to the largest K would
be cheaper to write but wrong: padded frames would take a share of the alignment head's softmax (or need
a mask the heads do not have) and would shift the prototype head's mean.

Calibration (`calibrate`), from the gallery itself, by leave-one-out over enrolled clips: each clip of a
label with >= 2 clips becomes a query against the gallery without it (its own label keeps K-1 clips).
- unknown queries: each such clip is also a query with its whole label removed, i.e. an action the
  gallery does not know (needs >= 3 labels, so that it still has >= 2 labels to choose among);
- temperature: the T (grid search on [0.1, 100], log-spaced) minimising the negative log-likelihood of
  softmax(logits / T) over the known queries plus the KL divergence of the unknown queries' softmax from
  the uniform distribution (outlier exposure). The likelihood alone drives T to its lower bound on a
  well-separated gallery, and every confidence, of known and unknown actions alike, to 1.0; the second
  term keeps T where confidence still tells them apart;
- threshold (open set): maximises balanced accuracy between accepting the correctly classified known
  queries and rejecting the unknown ones, but never gives up more than 10% of the known ones (when
  unknown actions look like known ones, rejecting most of everything would score well and serve no one).
  Known queries are scored on the N labels a query meets; the unknown ones can only be scored on N-1,
  and a softmax over fewer labels is more confident, so the share of unknown actions rejected is a
  lower bound (the calibration records it with the share of known ones accepted).
Defaults when the gallery cannot tell (a label-less, 1-label or 1-clip-per-label gallery): temperature 1
(softmax of the raw logits) and threshold 0 (nothing is "unknown" unless the caller sets a threshold).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import SSTEdgeError
from ..fewshot import HeadConfig

if TYPE_CHECKING:
    from .gallery import Gallery

UNKNOWN = "unknown"
DEFAULT_TEMPERATURE = 1.0
DEFAULT_THRESHOLD = 0.0
TEMPERATURES = np.geomspace(0.1, 100.0, 121)
MIN_ACCEPT = 0.9  # the threshold keeps at least this share of correctly classified known queries


# ------------------------------------------------------------------------------------------------ logits
def support_logits(query: np.ndarray, supports: Sequence[np.ndarray], head: HeadConfig) -> np.ndarray:
    """Logits ``[Q, N]`` of queries ``[Q, T, C]`` against N labels' supports ``[K_c, T, C]`` (K_c may differ).

    Labels with the same K are computed together as one ``[n, K, T, C]`` support of the head."""
    q = np.asarray(query, np.float32)
    out = np.empty((len(q), len(supports)), np.float32)
    by_k: dict[int, list[int]] = {}
    for c, s in enumerate(supports):
        by_k.setdefault(len(s), []).append(c)
    for k, cols in by_k.items():
        if k == 0:
            raise ValueError("a label without clips has no prototype")
        out[:, cols] = head.logits_np(q, np.stack([supports[c] for c in cols]))
    return out


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = np.asarray(logits, np.float64) / temperature
    z = z - z.max(-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)


# ----------------------------------------------------------------------------------------- calibration
def calibration_key(groups: Sequence[Sequence[str]], head: HeadConfig) -> str:
    """What a calibration depends on: which clips are grouped together (not the label names) and the head."""
    blob = json.dumps({"groups": sorted(sorted(g) for g in groups), "head": head.to_dict()}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def default_calibration(key: str, head: HeadConfig, why: str) -> dict[str, Any]:
    return {"method": "default", "why": why, "temperature": DEFAULT_TEMPERATURE,
            "threshold": DEFAULT_THRESHOLD, "key": key, "head": head.to_dict()}


def leave_one_out(supports: Sequence[np.ndarray],
                  head: HeadConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(logits [M, N], true labels [M], full-gallery logits [M, N]) of every clip of a label with >= 2
    clips, queried against the gallery without that clip."""
    rows, ys, full = [], [], []
    for c, s in enumerate(supports):
        if len(s) < 2:
            continue
        f = support_logits(s, supports, head)  # the clip itself is in its label's support here
        for i in range(len(s)):
            row = f[i].copy()
            row[c] = head.logits_np(s[i:i + 1], np.delete(s, i, axis=0)[None])[0, 0]
            rows.append(row)
            full.append(f[i])
            ys.append(c)
    n = len(supports)
    if not rows:
        return np.zeros((0, n), np.float32), np.zeros(0, np.int64), np.zeros((0, n), np.float32)
    return np.stack(rows), np.asarray(ys, np.int64), np.stack(full)


def _log_softmax(logits: np.ndarray, temperature: float) -> np.ndarray:
    z = np.asarray(logits, np.float64) / temperature
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def fit_temperature(logits: np.ndarray, labels: np.ndarray, unknown: np.ndarray | None = None) -> float:
    """The grid temperature of least loss: the negative log-likelihood of the known queries, plus, with
    `unknown` logits, their KL divergence from the uniform distribution (outlier exposure)."""
    rows = np.arange(len(labels))
    losses = []
    for t in TEMPERATURES:
        loss = -_log_softmax(logits, t)[rows, labels].mean()
        if unknown is not None and len(unknown):
            loss += (-_log_softmax(unknown, t).mean(-1) - np.log(unknown.shape[1])).mean()
        losses.append(loss)
    return float(TEMPERATURES[int(np.argmin(losses))])


def fit_threshold(known: np.ndarray, unknown: np.ndarray,
                  min_accept: float = MIN_ACCEPT) -> tuple[float, float, float]:
    """(threshold, share of `known` accepted, share of `unknown` rejected).

    Accept means confidence >= threshold. The threshold maximises the mean of the two shares among those
    that accept at least `min_accept` of `known`; of equally good ones the lowest, placed halfway to the
    next lower score so that a small shift does not flip a decision."""
    scores = np.unique(np.concatenate([known, unknown, [0.0]]))
    best = (-1.0, 0.0, 1.0, 0.0)
    for thr in scores:
        acc_k = float((known >= thr).mean()) if len(known) else 1.0
        if acc_k < min_accept - 1e-12:
            break
        rej_u = float((unknown < thr).mean()) if len(unknown) else 0.0
        if (acc_k + rej_u) / 2 > best[0] + 1e-12:
            best = ((acc_k + rej_u) / 2, float(thr), acc_k, rej_u)
    _, thr, acc_k, rej_u = best
    lower = scores[scores < thr]
    if len(lower):
        thr = float((thr + lower.max()) / 2)
    return thr, acc_k, rej_u


def calibrate(supports: Sequence[np.ndarray], head: HeadConfig, key: str = "") -> dict[str, Any]:
    """Temperature and open-set threshold from leave-one-out over the gallery (see the module docstring)."""
    n = len(supports)
    if n < 2:
        return default_calibration(key, head, "fewer than 2 labels: the confidence is always 1")
    logits, ys, full = leave_one_out(supports, head)
    if len(ys) < 2:
        return default_calibration(key, head, "no label has 2 clips: leave-one-out needs them")
    others = np.ones_like(full, dtype=bool)
    others[np.arange(len(ys)), ys] = False
    unknown = full[others].reshape(len(ys), n - 1) if n >= 3 else None  # the clip's own label removed
    t = fit_temperature(logits, ys, unknown)
    correct = logits.argmax(1) == ys
    cal = {"method": "leave-one-out", "temperature": t, "threshold": DEFAULT_THRESHOLD, "key": key,
           "head": head.to_dict(), "queries": int(len(ys)), "labels": n,
           "loo_accuracy": round(float(correct.mean()), 4)}
    if unknown is None:
        cal["why_no_threshold"] = "fewer than 3 labels: no unknown queries to set the threshold with"
        return cal
    if not correct.any():
        cal["why_no_threshold"] = "no leave-one-out query was classified correctly"
        return cal
    thr, acc_k, rej_u = fit_threshold(softmax(logits[correct], t).max(1), softmax(unknown, t).max(1))
    cal.update(threshold=round(thr, 6), known_accepted=round(acc_k, 4), unknown_rejected=round(rej_u, 4))
    return cal


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


def group_ids(labels: Mapping[str, Sequence[Any]], keep: Sequence[str]) -> list[list[str]]:
    """The clip ids of each kept label (records with an `id`), for `calibration_key`."""
    return [[r.id for r in labels[lb]] for lb in keep]
