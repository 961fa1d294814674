"""Few-shot heads: class logits of query clips from the per-frame features of a few support clips.

The numpy implementation (the on-device runtime, which has no torch) and the head settings; the torch
twin for training lives in `sst_edge.fewshot`. Both follow DESIGN.md and agree
to 1e-5 (tests/test_fewshot.py). prototype and alignment have no learned parameters: a device builds
prototypes from features alone. cca (RENet's cross-correlational attention over frames) has learned
weights, which ship with the model: device/cca.py.

Shapes: query ``[Q, T, C]``, support ``[N, K, T, C]`` (N classes, K shots, class-major like `Episode`),
logits ``[Q, N]`` (higher is closer).

- prototype (ProtoNet, for comparison): a clip's embedding is the mean of its L2-normalised frame features,
  normalised again; the class prototype is the mean of its K embeddings; logit = -||q - p||^2 / tau.
  Averaging over time throws the order of frames away.
- alignment (SST's query-specific prototype, the default): for each query frame t, attention over the
  support frames (k, t') of class c with weights softmax(<q_t, s_{k,t'}> / tau), restricted to
  |t - t'| <= window; p_{c,t} = sum a * s_{k,t'}; logit = -mean_t ||q_t - p_{c,t}||^2 / tau.
  Provenance: a non-parametric prototype built per query and class from all the support frames is the
  paper's idea; this formula, the squared-distance logit, tau and the window are our reconstruction.

Defaults: tau = 0.1 (unit vectors: squared distances lie in [0, 4], so logits span [-40, 0], a
cosine-classifier scale of 10). window = 1: each query frame is compared with the support frames at most
one segment away, which stays robust to a small shift in speed or phase, yet a clip played backwards no
longer matches. Measured on the synthetic dataset with sst_tiny (2000 steps trained through window 1,
no shrinking; three subnets; each head scored on the same features; 5-way 1-shot meta-test): window 1
0.69-0.71, no window 0.65-0.67, window 0 0.63-0.66, prototype 0.63-0.66; on the reversed pair
split/merge (2-way, chance 0.5): window 1 0.62-0.68, window 0 0.62-0.74, no window 0.45-0.47,
prototype 0.48-0.50. Window 1 is the best all-round choice.
"""

from __future__ import annotations

import numpy as np

from ..errors import SSTEdgeError
from .cca import cca_logits_np
from .settings import DEFAULT_HEAD, DEFAULT_TAU, DEFAULT_WINDOW, HEADS, HeadConfig

_EPS = 1e-12


def _check(query_shape: tuple, support_shape: tuple) -> None:
    if len(query_shape) != 3 or len(support_shape) != 4:
        raise ValueError(f"expected query [Q, T, C] and support [N, K, T, C], got {tuple(query_shape)} and "
                         f"{tuple(support_shape)}")
    if query_shape[-1] != support_shape[-1]:
        raise ValueError(f"feature widths differ: query {query_shape[-1]}, support {support_shape[-1]}")


def _window_mask(tq: int, ts: int, window: int | None) -> np.ndarray | None:
    """True where query frame t may NOT look at support frame t' (|t - t'| > window); None: no mask."""
    if window is None:
        return None
    return np.abs(np.arange(tq)[:, None] - np.arange(ts)[None, :]) > window


def _normalize_np(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), _EPS)


def prototype_logits_np(query: np.ndarray, support: np.ndarray, tau: float = DEFAULT_TAU) -> np.ndarray:
    """numpy twin of `prototype_logits` (keeps the input's float dtype)."""
    _check(query.shape, support.shape)
    q = _normalize_np(_normalize_np(query).mean(1))
    p = _normalize_np(_normalize_np(support).mean(2)).mean(1)
    return -((q[:, None, :] - p[None, :, :]) ** 2).sum(-1) / tau


def alignment_logits_np(query: np.ndarray, support: np.ndarray, tau: float = DEFAULT_TAU,
                        window: int | None = DEFAULT_WINDOW) -> np.ndarray:
    """numpy twin of `alignment_logits` (keeps the input's float dtype)."""
    _check(query.shape, support.shape)
    n, k, ts, c = support.shape
    q = _normalize_np(query)
    s = _normalize_np(support).reshape(n, k * ts, c)
    sim = np.einsum("qtc,njc->qntj", q, s) / tau
    mask = _window_mask(q.shape[1], ts, window)
    if mask is not None:
        sim = np.where(np.tile(mask, (1, k)), -np.inf, sim)
    sim = sim - sim.max(-1, keepdims=True)
    a = np.exp(sim)
    a /= a.sum(-1, keepdims=True)
    p = np.einsum("qntj,njc->qntc", a, s)
    return -((q[:, None] - p) ** 2).sum(-1).mean(-1) / tau


def head_logits_np(query: np.ndarray, support: np.ndarray, head: HeadConfig) -> np.ndarray:
    if head.kind == "prototype":
        return prototype_logits_np(query, support, head.tau)
    if head.kind == "cca":
        if head.params is None:
            raise SSTEdgeError("the cca head has no weights attached: they come from a cca run or a model "
                               "exported from one")
        return cca_logits_np(query, support, head.params, head.tau)
    return alignment_logits_np(query, support, head.tau, head.window)


__all__ = ["DEFAULT_HEAD", "DEFAULT_TAU", "DEFAULT_WINDOW", "HEADS", "HeadConfig", "alignment_logits_np",
           "cca_logits_np", "head_logits_np", "prototype_logits_np"]
