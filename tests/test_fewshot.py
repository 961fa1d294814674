"""The few-shot heads: torch and numpy agree, and each behaves as DESIGN.md describes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sst_edge.device.heads import alignment_logits_np, head_logits_np, prototype_logits_np
from sst_edge.device.settings import HeadConfig
from sst_edge.errors import SSTEdgeError
from sst_edge.fewshot import alignment_logits, head_logits, prototype_logits


def features(q: int = 7, n: int = 5, k: int = 3, t: int = 4, c: int = 16, seed: int = 0,
             dtype: type = np.float32) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(q, t, c)).astype(dtype), rng.normal(size=(n, k, t, c)).astype(dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("head", [HeadConfig("prototype"), HeadConfig("alignment", 0.1, None),
                                  HeadConfig("alignment", 0.1, 0), HeadConfig("alignment", 0.1, 1),
                                  HeadConfig("alignment", 0.5, 2)])
def test_torch_and_numpy_agree(head: HeadConfig, dtype: type) -> None:
    q, s = features(dtype=dtype)
    a = head_logits(torch.from_numpy(q), torch.from_numpy(s), head).numpy()
    b = head_logits_np(q, s, head)
    assert a.shape == b.shape == (7, 5) and b.dtype == dtype
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)


def reference_alignment(q: np.ndarray, s: np.ndarray, tau: float, window: int | None) -> np.ndarray:
    """The DESIGN.md formula written with loops, in float64."""
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    s = s / np.linalg.norm(s, axis=-1, keepdims=True)
    n, k, ts, _ = s.shape
    out = np.zeros((len(q), n))
    for i, qc in enumerate(q):
        for c in range(n):
            dist = []
            for t, qt in enumerate(qc):
                pairs = [(kk, u) for kk in range(k) for u in range(ts)
                         if window is None or abs(t - u) <= window]
                w = np.array([qt @ s[c, kk, u] / tau for kk, u in pairs])
                w = np.exp(w - w.max())
                w /= w.sum()
                p = sum(wi * s[c, kk, u] for wi, (kk, u) in zip(w, pairs, strict=True))
                dist.append(((qt - p) ** 2).sum())
            out[i, c] = -np.mean(dist) / tau
    return out


@pytest.mark.parametrize("window", [None, 0, 1])
def test_alignment_follows_the_formula(window: int | None) -> None:
    q, s = features(q=3, n=2, k=2, t=4, c=8, dtype=np.float64)
    np.testing.assert_allclose(alignment_logits_np(q, s, 0.2, window), reference_alignment(q, s, 0.2, window),
                               rtol=1e-10, atol=1e-10)


def test_alignment_tells_a_clip_from_itself_played_backwards() -> None:
    """Frames as a set are equal; only their order differs. The mean (ProtoNet) cannot tell; alignment can."""
    rng = np.random.default_rng(1)
    clip = rng.normal(size=(8, 32))
    support = np.stack([clip, clip[::-1]])[:, None]  # class 0: the clip, class 1: reversed; [2, 1, T, C]
    query = (clip + 0.05 * rng.normal(size=clip.shape))[None]
    proto = prototype_logits_np(query, support)
    assert abs(proto[0, 0] - proto[0, 1]) < 0.2  # nearly a tie (only the noise differs)
    aligned = alignment_logits_np(query, support, window=1)
    assert aligned[0, 0] > aligned[0, 1] + 5
    unwindowed = alignment_logits_np(query, support, window=None)
    assert abs(unwindowed[0, 0] - unwindowed[0, 1]) < abs(aligned[0, 0] - aligned[0, 1])


def test_prototype_is_the_mean_of_shots_and_gradients_flow() -> None:
    q, s = features(q=2, n=3, k=4)
    qt = torch.from_numpy(q).requires_grad_()
    st = torch.from_numpy(s).requires_grad_()
    for fn in (prototype_logits, alignment_logits):
        logits = fn(qt, st)
        assert logits.shape == (2, 3) and torch.isfinite(logits).all() and (logits <= 1e-6).all()
        torch.nn.functional.cross_entropy(logits, torch.tensor([0, 2])).backward()
        assert torch.isfinite(qt.grad).all() and st.grad.abs().sum() > 0
    # the same clip as support and query is its own nearest class
    same = prototype_logits_np(s[:, 0], s[:, :1])
    assert (same.argmax(1) == np.arange(3)).all()


def test_head_config_checks_and_round_trips() -> None:
    h = HeadConfig("alignment", 0.2, None)
    assert HeadConfig.from_dict(h.to_dict()) == h
    with pytest.raises(SSTEdgeError) as e:
        HeadConfig("mean", -1.0, -2)
    assert "head must be one of" in str(e.value) and "tau" in str(e.value) and "window" in str(e.value)
    with pytest.raises(ValueError):
        alignment_logits_np(np.zeros((2, 4, 8)), np.zeros((2, 1, 4, 9)))
