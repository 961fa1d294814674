"""Calibrated confidence and the open-set ("unknown") threshold of a gallery, and the logits they rest on.

The open-set rule (version 2). A query is "unknown" when its best logit, the negative aligned distance to
its nearest label, is below the gallery's score threshold. (The cca head's logit is cosine / tau: its
distance is (1 - cosine) / tau = 1/tau - logit, `distance_offset`; everything else is the same.)
Leave-one-out over the enrolled clips gives
the reference scores without any unknown data: each clip of a label with >= 2 clips is a query against
the gallery without it.
- known scores: its own label's logit (that label keeps K-1 clips), one per clip (n in all);
- unknown scores (>= 2 labels): its best logit over the other labels, i.e. a query of an action the
  gallery does not hold;
- floor (from one label with 2 clips upward): a 95% one-sided prediction bound on a new known score,
  with the own-label distances taken as log-normal: -exp(m + t(0.95, n-1) s sqrt(1 + 1/n)) of the logs'
  mean m and sd s. Were the distances log-normal, it would lose 5% of known clips at any n (a plain
  quantile of 10 scores is an order statistic that loses 1 in 11 or more); it widens with few clips;
- fit (>= 2 labels): the threshold of best balanced accuracy between accepting correctly classified
  known scores and rejecting unknown ones that keeps >= 95% of the known;
- score threshold = max(floor, fit): the floor keeps far-away clips out when the labels are far apart and
  the fit would sit low; the fit rejects look-alikes of enrolled actions where there are any.
A gallery with no label of 2 clips has no reference: the threshold is not calibrated (None) and the
calibration says why, so that classify can say every clip gets its nearest label.

Why this rule, measured with bench/open_set.py (sst_tiny from `sst-edge demo`; the synthetic set
re-rendered with 20 clips per class; 40 random galleries of 6 labels x 5 clips plus 6 never-enrolled
classes, all from classes the model never trained on):
- tuned on 24 "fresh" classes (`--classes 48`, the 24 the demo lacks): the AUROC of correctly classified
  known clips against never-enrolled ones is 0.85 for the best logit and 0.65 for the calibrated max
  softmax (near 1 even far from every label). max(floor, fit) lost 4.1 points of known accuracy (95% CI
  2.7-5.6) for 49% (42-56%) of never-enrolled clips answered "unknown" (the old softmax rule: 1.7 points,
  13%). Design-time, same pool: by labels 1 / 2 / 3 / 6, 2.7 / 2.8 / 3.1 / 4.7 points for 71 / 62 / 56 /
  56%; at 1 label a plain 5% quantile as the floor lost 12.8 points, a normal (not log-normal) bound 5.7;
  over 60 draws keeping 95% in the fit lost 3.6 points for 52%, 97% 2.6 for 47%; the softmax threshold
  on top of the score threshold cost 0.9 more points for 1.7 more rejected, so the confidence threshold
  is no longer calibrated (0: off; a caller's `--threshold` replaces the score rule);
- held out (the demo's 12 val and test classes): closed set 0.815, open set 0.789 (a drop of 2.6 points,
  1.8-3.5), never-enrolled "unknown" 33% (27-39%; the old rule 3%): 12% when the never-enrolled class is
  the time-reversed twin of an enrolled one (the same frames backwards), 45% otherwise; on the demo's own
  10-clip set (5 held-out clips a label) the drop was 5.8 points (4.0-7.8), "unknown" 32%. The goal of 80%
  is out of this model's reach: its best-logit AUROC there is 0.77. Blank and noise clips are caught by
  classify.py's content check; camera pans over natural-statistics textures come out "unknown" in 77%.

Out of distribution (the check of clips unlike the training data, version 1; device/ood.py holds the
score, classify.py applies it). Threshold: the 95% one-sided prediction bound of a new known clip's
squared Mahalanobis distance to its label's mean, from leave-one-out over the gallery (each clip of a
label with >= 2 clips against the mean of the others), log-normal as the floor is. A one-sided bound on
the known clips alone, because the gallery has no unknown clips to fit against, and the floor's form,
because it holds from one label of 2 clips up and widens when there are few. The reference is
conservative (a new clip is scored against K clips, not K-1, and against its nearest label): the bound
lost 2.9% of known clips on its own where 5% is nominal. Why this score and rule, measured with
bench/open_set.py (40 draws of 6 labels x 5 clips from the 12 held-out classes, 6 more never enrolled;
sst_tiny trained as the demo trains it, 100 episodes x 8 epochs, its largest subnet; 120 training clips):
- AUROC of correctly classified known clips against each kind (best logit / energy / the check's label
  Mahalanobis / Mahalanobis to the training distribution itself): never-enrolled synthetic classes
  0.745 / 0.701 / 0.721 / 0.485; moving 1/f textures 0.995 / 0.993 / 0.984 / 0.873; camera pans over
  1/f textures 0.972 / 0.962 / 0.996 / 0.938. Energy ranks clips by the same gallery distances as the best
  logit, never better here, so it adds nothing the distance rule lacks; the distance to the training
  distribution itself cannot tell new actions (as far from the training actions as a texture is) from
  scenes; the label Mahalanobis measures what the distance rule does not (the training data's metric);
- added to the distance rule: pans 84.1% -> 93.1% unknown [91.2, 94.9], textures 94.9% -> 97.6%
  [95.9, 99.0], never-enrolled classes 39.2% -> 41.5% [36.2, 46.5], for 0.92 points of known accuracy
  [0.33, 1.58]; on the tests' briefly trained sst_tiny pans 87.9% -> 100%, textures 96.3% -> 100%,
  never-enrolled 27.3% -> 31.6%, for 1.0 point [0.5, 1.6]; a 90% bound instead of 95% (prototyping on
  the test classes) rejected 2-5 more points of backgrounds for about 2 points of known accuracy;
  Mahalanobis to the training distribution as a further check (95% bound on the gallery's clips) added
  nothing and lost 2.4 points of known clips;
- cost per span: ~20 us of numpy on this CPU (sst_tiny: [1, 4, 64], 6 labels x 5 clips), 17% of the
  head's 113 us; sst_paper's [1, 8, 160]: 31 us, 13% of the head's 244 us; the model itself takes
  about 1.3 ms (sst_tiny) per span.

Temperature (the confidence shown, not the decision): the T (grid search on [0.1, 100], log-spaced)
minimising the negative log-likelihood of softmax(logits / T) over the known queries plus, with >= 3
labels, the KL divergence of the unknown queries' softmax from the uniform distribution (the likelihood
alone drives T to its lower bound on a well-separated gallery, and every confidence to 1.0).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..device.heads import head_logits_np
from ..device.ood import FeatureDistribution, pool
from ..device.settings import HeadConfig

UNKNOWN = "unknown"
METHOD = "leave-one-out"
VERSION = 2  # in the key: calibrations stored by an older rule are recomputed, never reused
DEFAULT_TEMPERATURE = 1.0
DEFAULT_THRESHOLD = 0.0  # the confidence threshold: off unless the caller sets one
TEMPERATURES = np.geomspace(0.1, 100.0, 121)
MIN_ACCEPT = 0.95  # the fitted threshold keeps at least this share of correctly classified known queries
_EPS = 1e-6
OOD_METHOD = "mahalanobis"  # the check's calibration: its rule (classify.py) and its version
OOD_VERSION = 1
# one-sided 95% quantiles of Student's t, 1..30 degrees of freedom (beyond: Cornish-Fisher, error < 1e-6)
_T95 = (6.3138, 2.92, 2.3534, 2.1318, 2.015, 1.9432, 1.8946, 1.8595, 1.8331, 1.8125, 1.7959, 1.7823,
        1.7709, 1.7613, 1.7531, 1.7459, 1.7396, 1.7341, 1.7291, 1.7247, 1.7207, 1.7171, 1.7139, 1.7109,
        1.7081, 1.7056, 1.7033, 1.7011, 1.6991, 1.6973)


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
        out[:, cols] = head_logits_np(q, np.stack([supports[c] for c in cols]), head)
    return out


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = np.asarray(logits, np.float64) / temperature
    z = z - z.max(-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)


# ----------------------------------------------------------------------------------------- calibration
def calibration_key(groups: Sequence[Sequence[str]], head: HeadConfig) -> str:
    """What a calibration depends on: which clips are grouped together (not the label names), the head
    and the rule's version."""
    blob = json.dumps({"groups": sorted(sorted(g) for g in groups), "head": head.to_dict(),
                       "version": VERSION}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def default_calibration(key: str, head: HeadConfig, why: str) -> dict[str, Any]:
    """No reference scores: no score threshold (every clip gets its nearest label), and `why`."""
    return {"method": "default", "version": VERSION, "why": why, "temperature": DEFAULT_TEMPERATURE,
            "threshold": DEFAULT_THRESHOLD, "score_threshold": None, "key": key, "head": head.to_dict()}


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
            row[c] = head_logits_np(s[i:i + 1], np.delete(s, i, axis=0)[None], head)[0, 0]
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
    """(threshold, share of `known` accepted, share of `unknown` rejected) for any score, higher = known.

    Accept means score >= threshold. The threshold maximises the mean of the two shares among those
    that accept at least `min_accept` of `known`; of equally good ones the lowest, placed halfway to the
    next lower score so that a small shift does not flip a decision."""
    known, unknown = np.asarray(known, np.float64), np.asarray(unknown, np.float64)
    scores = np.unique(np.concatenate([known, unknown]))
    best = (-1.0, float(scores[0]), 1.0, 0.0)
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


def t95(df: int) -> float:
    """The one-sided 95% quantile of Student's t with `df` >= 1 degrees of freedom."""
    if df < 1:
        raise ValueError(f"need >= 1 degree of freedom, got {df}")
    if df <= len(_T95):
        return _T95[df - 1]
    z = 1.6448536269514722
    return (z + (z ** 3 + z) / 4 / df + (5 * z ** 5 + 16 * z ** 3 + 3 * z) / 96 / df ** 2
            + (3 * z ** 7 + 19 * z ** 5 + 17 * z ** 3 - 15 * z) / 384 / df ** 3)


def prediction_bound(distances: np.ndarray) -> float:
    """The 95% one-sided upper prediction bound of a new one of n >= 2 positive `distances`, taken as
    log-normal (positive, and skewed towards far): exp(m + t(0.95, n-1) s sqrt(1 + 1/n)) of the logs'
    mean m and sd s."""
    d = np.log(np.maximum(np.asarray(distances, np.float64), _EPS))
    if len(d) < 2:
        raise ValueError("a prediction bound needs >= 2 values")
    return float(math.exp(d.mean() + t95(len(d) - 1) * d.std(ddof=1) * math.sqrt(1 + 1 / len(d))))


def distance_offset(head: HeadConfig) -> float:
    """The logit of a perfect match: distance = offset - logit >= 0. The prototype and alignment logits
    are negative squared distances (offset 0); cca's is cosine / tau, so its distance is (1 - cos) / tau."""
    return 1.0 / float(head.tau) if head.kind == "cca" else 0.0


def distance_floor(own: np.ndarray, offset: float = 0.0) -> float:
    """The floor of the score threshold from n >= 2 own-label leave-one-out logits: the prediction bound
    of a new one's distance (offset - logit, `distance_offset`)."""
    own = np.asarray(own, np.float64)
    if len(own) < 2:
        raise ValueError("the floor needs >= 2 leave-one-out scores")
    return offset - prediction_bound(offset - own)


def calibrate(supports: Sequence[np.ndarray], head: HeadConfig, key: str = "") -> dict[str, Any]:
    """Temperature and open-set score threshold from leave-one-out over the gallery (module docstring)."""
    n = len(supports)
    if n < 1:
        return default_calibration(key, head, "the gallery holds no clips")
    logits, ys, full = leave_one_out(supports, head)
    if len(ys) < 2:
        return default_calibration(key, head, "no label has 2 clips: leave-one-out needs them to tell how "
                                              "far a clip of a known action lies from its label")
    rows = np.arange(len(ys))
    own = logits[rows, ys].astype(np.float64)
    others = np.ones_like(full, dtype=bool)
    others[rows, ys] = False
    unknown_rows = full[others].reshape(len(ys), n - 1)  # the clip's own label removed
    correct = logits.argmax(1) == ys
    t = fit_temperature(logits, ys, unknown_rows if n >= 3 else None) if n >= 2 else DEFAULT_TEMPERATURE
    floor = distance_floor(own, distance_offset(head))
    accuracy = round(float(correct.mean()), 4)
    cal: dict[str, Any] = {"method": METHOD, "version": VERSION, "temperature": t,
                           "threshold": DEFAULT_THRESHOLD, "key": key, "head": head.to_dict(),
                           "queries": int(len(ys)), "labels": n, "loo_accuracy": accuracy,
                           "floor": round(floor, 6), "fit": None}
    thr = floor
    unknown = unknown_rows.max(1) if n >= 2 else np.zeros(0)
    if n >= 2 and correct.any():
        fit, _, _ = fit_threshold(own[correct], unknown, MIN_ACCEPT)
        cal["fit"] = round(fit, 6)
        thr = max(floor, fit)
    cal["score_threshold"] = round(thr, 6)
    cal["known_accepted"] = round(float((own >= thr).mean()), 4)
    if len(unknown):
        cal["unknown_rejected"] = round(float((unknown < thr).mean()), 4)
    return cal


# ------------------------------------------------------------------------- out of distribution (ood.py)
def ood_key(groups: Sequence[Sequence[str]], digest: str) -> str:
    """What the check's threshold depends on: which clips are grouped together, the training-feature
    file (its sha256) and the rule's version."""
    blob = json.dumps({"groups": sorted(sorted(g) for g in groups), "distribution": digest,
                       "version": OOD_VERSION}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def white_means(supports: Sequence[np.ndarray], dist: FeatureDistribution) -> np.ndarray:
    """The labels' mean pooled features, whitened by the within-action covariance: ``[N, D]``."""
    return dist.whiten(np.stack([pool(s).mean(0) for s in supports]))


def ood_scores(features: np.ndarray, means: np.ndarray, dist: FeatureDistribution) -> np.ndarray:
    """The check's score ``[Q]`` of clips ``[Q, T, C]``: squared Mahalanobis distance of each pooled
    feature to the nearest label mean (`means` from `white_means`)."""
    return dist.label_distances(pool(features), means).min(1)


def ood_leave_one_out(supports: Sequence[np.ndarray], dist: FeatureDistribution) -> np.ndarray:
    """The squared Mahalanobis distance of every clip of a label with >= 2 clips to the mean of its
    label's other clips: what a new clip of an enrolled action scores (an upper bound of it: a new clip
    is scored against the nearest label, and against all K clips)."""
    out = []
    for s in supports:
        if len(s) < 2:
            continue
        w = dist.whiten(pool(s))
        rest = (w.sum(0)[None] - w) / (len(w) - 1)
        out.append(((w - rest) ** 2).sum(1))
    return np.concatenate(out) if out else np.zeros(0)


def calibrate_ood(supports: Sequence[np.ndarray], dist: FeatureDistribution, key: str = "") -> dict[str, Any]:
    """The check's threshold (module docstring of classify.py): the 95% prediction bound of a new known
    clip's squared distance, from leave-one-out over the gallery's labels with >= 2 clips."""
    own = ood_leave_one_out(supports, dist)
    base = {"version": OOD_VERSION, "key": key, "distribution": dist.digest[:16]}
    if len(own) < 2:
        return {**base, "method": "default", "threshold": None,
                "why": "no label has 2 clips: leave-one-out needs them to tell how far from its label's "
                       "mean a clip of a known action lies"}
    thr = prediction_bound(own)
    return {**base, "method": OOD_METHOD, "threshold": round(thr, 6), "queries": int(len(own)),
            "known_accepted": round(float((own <= thr).mean()), 4),
            "median": round(float(np.median(own)), 6)}


def group_ids(labels: Mapping[str, Sequence[Any]], keep: Sequence[str]) -> list[list[str]]:
    """The clip ids of each kept label (records with an `id`), for `calibration_key`."""
    return [[r.id for r in labels[lb]] for lb in keep]
