"""The training-feature distribution of the out-of-distribution check: fitted at export, read on the device.

Most of a camera's time shows no enrolled action. The distance rule (runtime/calibration.py) measures how far
a clip lies from its nearest label in the head's metric, in which one action's clips spread equally in every
direction. They do not: the training split shows in which directions clips of one action vary (speed,
position, colour shade) and in which they never do, and a scene unlike the training data (a moving
texture, a camera pan) moves the features along the latter. The check is the Mahalanobis
out-of-distribution score of Lee et al. (2018, "A simple unified framework for detecting out-of-distribution
samples and adversarial attacks": class-conditional Gaussians with one tied covariance), made few-shot:
- x: a clip's pooled feature, the mean of its L2-normalised frame features (both heads normalise frames);
- m_c: the mean of x over the clips of enrolled label c (from the gallery: the device's actions are not
  the training actions);
- W: the within-action covariance of the training split (training clips around their own action's mean),
  Ledoit-Wolf shrunk; a gallery of 5 clips a label cannot estimate a 64-or-more-dimensional covariance,
  the training split can;
- score d2(x) = min_c (x - m_c)^T W^-1 (x - m_c), computed as ||L^-1 x - L^-1 m_c||^2 with W = L L^T
  (Cholesky; L^-1 formed once when the file is read, the labels' L^-1 m_c once per gallery).
The file also holds the training features' mean and (total, shrunk) covariance: `training_distance`, the
distance to the training distribution itself, which bench/open_set.py reports beside the check.

Why Ledoit-Wolf: export embeds a bounded number of training clips (256 by default) of features of 64 to
160 dimensions (sst_tiny, sst_paper), and the sample covariance of n clips has rank < n: singular when
n <= D and, near it, with its smallest eigenvalues far below the truth, so that directions where the
training clips happened to vary little would weigh most. Ledoit and Wolf's shrinkage towards a scaled
identity, (1 - s) S + s tr(S)/D I, takes the intensity s that minimises the expected squared (Frobenius)
error, in closed form from the data (no knob to tune), and is always positive definite. Measured (the
demo-trained sst_tiny, 64 dimensions, 120 training clips of 12 actions: s = 0.015 for the covariance,
0.079 within actions; AUROC of known clips against camera pans / moving textures, 6 enrolled test
classes): Ledoit-Wolf 0.987 / 0.989, the sample covariance 0.968 / 0.975, no covariance (Euclidean
distance of pooled features) 0.937 / 0.926; from 48 of the clips, fewer than the dimensions, Ledoit-Wolf
0.984 / 0.991 and the sample covariance (made invertible by a 1e-9 ridge) 0.57 / 0.91.

File (`train_features.safetensors`, listed in the card's `files` with its sha256, described by the card's
`ood` section): float32 tensors `mean` [D], `covariance` [D, D], `within` [D, D], and metadata (format,
version, pooling, clips, classes, shrinkage). Read with safetensors' numpy API (no pickle), size-checked
before it is read, its sha256 checked against the card on the bytes that are parsed.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import safetensors.numpy as stn

from ..errors import SSTEdgeError
from ..fileio import read_bytes, sha256_bytes
from ..text import brief
from .card import CARD_FILE, ModelCard

OOD_FILE = "train_features.safetensors"
OOD_FORMAT = "sst-edge/train-features"
OOD_VERSION = 1
POOLING = "mean over frames of the L2-normalised frame features"
SCORE = ("squared Mahalanobis distance to the nearest label's mean, in the training split's within-action "
         "covariance (Ledoit-Wolf)")
TENSORS = ("mean", "covariance", "within")
_HEADER_MAX = 1 << 16
_EPS = 1e-12
NO_CARD_RECORD = ("the model card has no training-feature distribution (exported before sst-edge recorded "
                  "one): re-export the model from its run folder to add the check")


def pool(features: np.ndarray) -> np.ndarray:
    """Per-frame features ``[Q, T, C]`` (or one clip ``[T, C]``) -> pooled ``[Q, C]`` float64: the mean of
    the L2-normalised frames (what the heads compare; a frame's length carries nothing they use)."""
    f = np.asarray(features, np.float64)
    f = f[None] if f.ndim == 2 else f
    if f.ndim != 3:
        raise SSTEdgeError(f"features must be [Q, T, C] or [T, C], got {tuple(np.shape(features))}")
    return (f / np.maximum(np.linalg.norm(f, axis=-1, keepdims=True), _EPS)).mean(1)


def ledoit_wolf(x: np.ndarray, centred: bool = False) -> tuple[np.ndarray, float]:
    """(shrunk covariance [D, D], shrinkage s in [0, 1]) of samples ``[n, D]`` (Ledoit & Wolf 2004).

    S = X^T X / n of the centred samples (`centred`: already centred, e.g. around their own class means),
    m = tr(S) / D, d2 = ||S - m I||_F^2 / D, b2 = min(d2, sum_k ||x_k x_k^T - S||_F^2 / (n^2 D)),
    s = b2 / d2, result (1 - s) S + s m I. The sum is sum_k ||x_k||^4 - n ||S||_F^2 (no n matrices)."""
    x = np.asarray(x, np.float64)
    if x.ndim != 2 or len(x) < 2:
        raise SSTEdgeError(f"the covariance needs >= 2 samples [n, D], got {tuple(x.shape)}")
    if not centred:
        x = x - x.mean(0)
    n, d = x.shape
    s = x.T @ x / n
    m = float(np.trace(s)) / d
    d2 = float(((s - m * np.eye(d)) ** 2).sum()) / d
    b2 = (float(((x * x).sum(1) ** 2).sum()) / n ** 2 - float((s * s).sum()) / n) / d
    shrink = 0.0 if d2 <= 0 else min(max(b2, 0.0), d2) / d2
    return (1 - shrink) * s + shrink * m * np.eye(d), shrink


def _inverse_cholesky(cov: np.ndarray, what: str) -> np.ndarray:
    """L^-1 of cov = L L^T: d2 = ||L^-1 z||^2 = z^T cov^-1 z without forming the inverse."""
    try:
        low = np.linalg.cholesky(cov)
    except np.linalg.LinAlgError:
        raise SSTEdgeError(f"the {what} of the training features is not positive definite") from None
    return np.linalg.solve(low, np.eye(len(cov)))


@dataclass(frozen=True)
class FeatureDistribution:
    """The training features' mean [D], covariance [D, D] and within-action covariance [D, D] (float64),
    how many clips and actions they came from, and the file's sha256 (`digest`, which the gallery's
    calibration of the check names). Built by `fit_distribution` (export) or `from_bytes` (device)."""

    mean: np.ndarray
    covariance: np.ndarray
    within: np.ndarray
    clips: int
    classes: int
    shrinkage: dict[str, float]
    digest: str = ""
    _white: np.ndarray = field(init=False, repr=False, compare=False)
    _white_total: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        d = len(self.mean)
        for name in TENSORS:
            a = np.asarray(getattr(self, name), np.float64)
            want = (d,) if name == "mean" else (d, d)
            if a.shape != want or not np.isfinite(a).all():
                raise SSTEdgeError(f"the training features' {name} must be finite {list(want)}, got "
                                   f"{list(a.shape)}")
            if name != "mean" and not np.allclose(a, a.T, rtol=1e-5, atol=1e-9):
                raise SSTEdgeError(f"the training features' {name} is not symmetric")
            object.__setattr__(self, name, a)
        object.__setattr__(self, "_white", _inverse_cholesky(self.within, "within-action covariance"))
        object.__setattr__(self, "_white_total", _inverse_cholesky(self.covariance, "covariance"))

    @property
    def dim(self) -> int:
        return len(self.mean)

    def whiten(self, pooled: np.ndarray) -> np.ndarray:
        """Pooled features ``[Q, D]`` -> L^-1 x ``[Q, D]``: squared distances between whitened points are
        squared Mahalanobis distances in the within-action covariance."""
        x = np.asarray(pooled, np.float64)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise SSTEdgeError(f"pooled features must be [Q, {self.dim}], got {list(x.shape)}")
        return x @ self._white.T

    def label_distances(self, pooled: np.ndarray, white_means: np.ndarray) -> np.ndarray:
        """Squared Mahalanobis distances ``[Q, N]`` of pooled features ``[Q, D]`` to N label means given
        whitened (``whiten(means)``, ``[N, D]``)."""
        z = self.whiten(pooled)[:, None, :] - np.asarray(white_means, np.float64)[None]
        return np.einsum("qnd,qnd->qn", z, z)

    def training_distance(self, pooled: np.ndarray) -> np.ndarray:
        """Squared Mahalanobis distance ``[Q]`` of pooled features to the training distribution itself
        (its mean and total covariance): reported by bench/open_set.py, not the check."""
        z = (np.asarray(pooled, np.float64) - self.mean) @ self._white_total.T
        return np.einsum("qd,qd->q", z, z)

    # -------------------------------------------------------------------------------------- the file
    def to_bytes(self) -> bytes:
        meta = {"format": OOD_FORMAT, "version": str(OOD_VERSION), "pooling": POOLING,
                "clips": str(self.clips), "classes": str(self.classes),
                **{f"shrinkage_{k}": repr(float(v)) for k, v in self.shrinkage.items()}}
        return stn.save({k: np.ascontiguousarray(getattr(self, k), np.float32) for k in TENSORS},
                        metadata=meta)

    @classmethod
    def from_bytes(cls, data: bytes, dim: int, where: Any = None) -> FeatureDistribution:
        """Parse a file of `dim`-dimensional features: exactly the three tensors, float32, finite."""
        want = 8 + 4 * (dim + 2 * dim * dim)
        if not want < len(data) <= max_file_bytes(dim):
            raise SSTEdgeError(f"{OOD_FILE} has {len(data):,} bytes; features of {dim} dimensions take "
                               f"{want:,} to {want + _HEADER_MAX:,} (damaged, or of another model)", where)
        header = struct.unpack("<Q", data[:8])[0]
        if 8 + header + 4 * (dim + 2 * dim * dim) != len(data):
            raise SSTEdgeError(f"{OOD_FILE} is not a training-feature file of {dim} dimensions", where)
        try:
            tensors = stn.load(data)
            meta = _metadata(data, header)
        except Exception as e:  # safetensors raises SafetensorError and others for a foreign file
            raise SSTEdgeError(f"{OOD_FILE} is not readable ({brief(e, 200)})", where) from None
        if sorted(tensors) != sorted(TENSORS) or meta.get("format") != OOD_FORMAT:
            raise SSTEdgeError(f"{OOD_FILE} is not an sst-edge training-feature file (tensors "
                               f"{sorted(tensors)}, format {brief(meta.get('format'))!r})", where)
        if meta.get("version") != str(OOD_VERSION):
            raise SSTEdgeError(f"{OOD_FILE} has version {brief(meta.get('version'))!r}; this sst-edge reads "
                               f"version {OOD_VERSION}", where)
        if any(t.dtype != np.float32 for t in tensors.values()):
            raise SSTEdgeError(f"{OOD_FILE}: tensors must be float32", where)
        try:
            clips, classes = int(meta["clips"]), int(meta["classes"])
            shrink = {k[len("shrinkage_"):]: float(v) for k, v in meta.items() if k.startswith("shrinkage_")}
        except (KeyError, ValueError):
            raise SSTEdgeError(f"{OOD_FILE}: its metadata lacks clips, classes or shrinkage", where) from None
        if tensors["mean"].shape != (dim,):
            raise SSTEdgeError(f"{OOD_FILE}: its mean has shape {list(tensors['mean'].shape)}, not [{dim}]",
                               where)
        try:
            return cls(tensors["mean"], tensors["covariance"], tensors["within"], clips, classes, shrink,
                       sha256_bytes(data))
        except SSTEdgeError as e:
            raise SSTEdgeError(f"{OOD_FILE}: {e.message}", where) from None


def max_file_bytes(dim: int) -> int:
    """The largest file of `dim`-dimensional training features: its tensors and a bounded header."""
    return 8 + _HEADER_MAX + 4 * (dim + 2 * dim * dim)


def _metadata(data: bytes, header: int) -> dict[str, str]:
    doc = json.loads(data[8:8 + header])
    meta = doc.get("__metadata__") or {}
    return {str(k): str(v) for k, v in meta.items()}


def fit_distribution(pooled: np.ndarray, labels: np.ndarray | list[str]) -> FeatureDistribution:
    """The distribution of pooled training features ``[n, D]`` of actions `labels` ``[n]``: mean, shrunk
    covariance, and shrunk covariance of each clip around its own action's mean (actions of one clip add
    nothing to it). Needs 2 clips in at least one action."""
    x = np.asarray(pooled, np.float64)
    y = np.asarray(labels)
    if x.ndim != 2 or len(x) != len(y):
        raise SSTEdgeError(f"need pooled features [n, D] and n labels, got {list(x.shape)} and {len(y)}")
    if not np.isfinite(x).all():
        raise SSTEdgeError("the training features hold NaN or Infinity")
    groups = [x[y == c] for c in np.unique(y)]
    centred = np.concatenate([g - g.mean(0) for g in groups if len(g) >= 2]) if any(
        len(g) >= 2 for g in groups) else np.zeros((0, x.shape[1]))
    if len(centred) < 2:
        raise SSTEdgeError("the within-action covariance needs an action with >= 2 training clips")
    cov, s_cov = ledoit_wolf(x)
    within, s_within = ledoit_wolf(centred, centred=True)
    return FeatureDistribution(x.mean(0), cov, within, len(x), len(groups),
                               {"covariance": round(s_cov, 6), "within": round(s_within, 6)})


def card_record(dist: FeatureDistribution, **extra: Any) -> dict[str, Any]:
    """The card's `ood` section for a distribution written as OOD_FILE."""
    return {"version": OOD_VERSION, "file": OOD_FILE, "score": SCORE, "pooling": POOLING, "clips": dist.clips,
            "classes": dist.classes, "dim": dist.dim, "shrinkage": dict(dist.shrinkage), **extra}


def load_distribution(card: ModelCard) -> tuple[FeatureDistribution | None, str]:
    """(the card's training-feature distribution, "") or (None, why there is none).

    A card that names a file it does not list in `files` (so no sha256 covers it), a file that differs
    from its sha256, or one that cannot be parsed is an error: a model directory modified after export."""
    rec = card.ood
    if rec is None:
        return None, NO_CARD_RECORD
    if "file" not in rec:
        return None, str(rec.get("why", "the model card says no training-feature distribution was stored"))
    name = rec["file"]
    folder = card.path.parent if card.path is not None else None
    where = folder / name if folder is not None else name
    if name not in card.files:
        raise SSTEdgeError(f"{CARD_FILE} names {name} as its training features but does not list it in "
                           "`files`, so its sha256 cannot be checked (re-export the model)", card.path)
    if folder is None:
        raise SSTEdgeError("a model card read from no file: its training features cannot be found")
    if rec.get("dim") != card.feature_dim:
        raise SSTEdgeError(f"{CARD_FILE} says training features of {rec.get('dim')} dimensions; the model "
                           f"gives {card.feature_dim}", card.path)
    expected = card.files[name]
    data = read_bytes(where, "training features", max_bytes=max_file_bytes(card.feature_dim))
    if len(data) != expected["bytes"] or sha256_bytes(data) != expected["sha256"]:
        raise SSTEdgeError(f"{name} does not match the sha256 in {CARD_FILE} (the file was modified or "
                           "corrupted after export; re-export it)", where)
    return FeatureDistribution.from_bytes(data, card.feature_dim, where), ""
