"""Calibrated confidence and the open-set threshold of a gallery, and the logits they are fitted on.

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
from typing import Any

import numpy as np

from ..device.heads import HeadConfig

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


def group_ids(labels: Mapping[str, Sequence[Any]], keep: Sequence[str]) -> list[list[str]]:
    """The clip ids of each kept label (records with an `id`), for `calibration_key`."""
    return [[r.id for r in labels[lb]] for lb in keep]
