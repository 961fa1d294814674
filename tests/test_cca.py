"""The cca head (RENet's cross-correlational attention over frames): torch vs numpy vs a brute-force loop
written from the definition (DESIGN.md, device/cca.py), its training, storage and the device's use of it."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from sst_edge.device.cca import cca_logits_np, cca_shapes, check_params, load_head_file, save_head_file
from sst_edge.device.heads import head_logits_np
from sst_edge.device.settings import HeadConfig
from sst_edge.errors import SSTEdgeError
from sst_edge.fewshot import head_logits
from sst_edge.fewshot_cca import CCAHead


# ---------------------------------------------------------------------------- a second implementation
def _unit(v: list[float]) -> list[float]:
    n = math.sqrt(sum(x * x for x in v))
    return [x / max(n, 1e-12) for x in v]


def _conv(grid: list[list[list[float]]], w: np.ndarray, b: np.ndarray) -> list[list[list[float]]]:
    """Cross-correlation with zero padding 1, channel by channel, pixel by pixel."""
    cin, h, wd = len(grid), len(grid[0]), len(grid[0][0])
    out = []
    for o in range(w.shape[0]):
        plane = []
        for i in range(h):
            row = []
            for j in range(wd):
                acc = float(b[o])
                for c in range(cin):
                    for dy in (-1, 0, 1):
                        for dx in (-1, 0, 1):
                            if 0 <= i + dy < h and 0 <= j + dx < wd:
                                acc += float(w[o, c, dy + 1, dx + 1]) * grid[c][i + dy][j + dx]
                row.append(acc)
            plane.append(row)
        out.append(plane)
    return out


def _stack(m: list[list[float]], p: dict) -> list[list[float]]:
    h = _conv([m], p["conv1.weight"], p["conv1.bias"])
    h = [[[max(x, 0.0) for x in row] for row in plane] for plane in h]
    return _conv(h, p["conv2.weight"], p["conv2.bias"])[0]


def _softmax_normalised(v: list[float]) -> list[float]:
    mean = sum(v) / len(v)
    var = sum((x - mean) ** 2 for x in v) / len(v)  # population variance
    z = [(x - mean) / math.sqrt(var + 1e-5) / 5.0 for x in v]
    e = [math.exp(x - max(z)) for x in z]
    return [x / sum(e) for x in e]


def brute_cca(query: np.ndarray, support: np.ndarray, p: dict, tau: float) -> np.ndarray:
    """RENet's CCA over frames, one (query, class, shot) at a time, in float64 Python loops."""
    nq, t_q, c = query.shape
    n, k, t_s, _ = support.shape
    w = p["reduce"]

    def reduced(frame: np.ndarray) -> list[float]:
        m = sum(frame) / c
        return _unit([max(0.0, sum(float(w[j, i]) * (frame[i] - m) for i in range(c)))
                      for j in range(w.shape[0])])

    out = np.zeros((nq, n))
    for q in range(nq):
        qr = [reduced(query[q, t]) for t in range(t_q)]
        qn = [_unit(list(query[q, t])) for t in range(t_q)]
        for cls in range(n):
            s_acc, q_acc = [0.0] * c, [0.0] * c
            for shot in range(k):
                sr = [reduced(support[cls, shot, t]) for t in range(t_s)]
                sn = [_unit(list(support[cls, shot, t])) for t in range(t_s)]
                corr = [[sum(a * b for a, b in zip(sr[i], qr[j], strict=True)) for j in range(t_q)]
                        for i in range(t_s)]
                transposed = [[corr[i][j] for i in range(t_s)] for j in range(t_q)]
                back = _stack(transposed, p)
                direct = _stack(corr, p)
                r = [[direct[i][j] + back[j][i] for j in range(t_q)] for i in range(t_s)]
                attn_s = [0.0] * t_s
                for j in range(t_q):  # the support side: over support frames, for each query frame
                    col = _softmax_normalised([r[i][j] for i in range(t_s)])
                    for i in range(t_s):
                        attn_s[i] += col[i]
                attn_q = [0.0] * t_q
                for i in range(t_s):
                    row = _softmax_normalised(r[i])
                    for j in range(t_q):
                        attn_q[j] += row[j]
                for ch in range(c):
                    s_acc[ch] += sum(attn_s[i] * sn[i][ch] for i in range(t_s)) / k
                    q_acc[ch] += sum(attn_q[j] * qn[j][ch] for j in range(t_q)) / k
            out[q, cls] = sum(a * b for a, b in zip(_unit(s_acc), _unit(q_acc), strict=True)) / tau
    return out


def random_params(c: int, seed: int, scale: float = 1.0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {k: (rng.standard_normal(s) * scale).astype(np.float32) for k, s in cca_shapes(c).items()}


# -------------------------------------------------------------------------------------------- parity
@pytest.mark.parametrize(("q", "n", "k", "t", "c"), [(3, 2, 1, 4, 5), (2, 3, 2, 4, 6), (2, 2, 3, 8, 4),
                                                     (1, 2, 1, 8, 70)])
def test_torch_numpy_and_brute_force_agree(q: int, n: int, k: int, t: int, c: int) -> None:
    rng = np.random.default_rng(q * 100 + k * 10 + t)
    query = rng.standard_normal((q, t, c))
    support = rng.standard_normal((n, k, t, c))
    p = random_params(c, seed=t + c)
    want = brute_cca(query, support, p, 0.2)
    got_np = cca_logits_np(query, support, p, 0.2)
    p64 = {kk: torch.from_numpy(v.astype(np.float64)) for kk, v in p.items()}
    from sst_edge.fewshot_cca import cca_logits
    got_t = cca_logits(torch.from_numpy(query), torch.from_numpy(support), p64, 0.2).numpy()
    np.testing.assert_allclose(got_np, want, atol=1e-9, rtol=0)
    np.testing.assert_allclose(got_t, want, atol=1e-9, rtol=0)
    # the float32 paths, as training and the device run them
    head = HeadConfig("cca", 0.2, params=p)
    f32 = head_logits_np(query.astype(np.float32), support.astype(np.float32), head)
    module = CCAHead(c)
    module.load(p)
    t32 = head_logits(torch.from_numpy(query).float(), torch.from_numpy(support).float(), head, module)
    assert f32.dtype == np.float32
    np.testing.assert_allclose(f32, t32.detach().numpy(), atol=1e-5, rtol=0)
    np.testing.assert_allclose(f32, want, atol=1e-5, rtol=0)


def test_the_symmetric_term_and_the_weights_matter() -> None:
    """Not a cosine of means: the refinement's weights change the logits (guards a silent identity)."""
    rng = np.random.default_rng(0)
    query, support = rng.standard_normal((2, 4, 6)), rng.standard_normal((3, 1, 4, 6))
    a = cca_logits_np(query, support, random_params(6, 1), 0.2)
    b = cca_logits_np(query, support, random_params(6, 2), 0.2)
    assert np.abs(a - b).max() > 1e-3


def test_head_config_defaults_and_records() -> None:
    assert HeadConfig("cca").tau == 0.2 and HeadConfig("cca").window is None
    assert HeadConfig("cca", window=3) == HeadConfig("cca")  # window is ignored by cca
    assert HeadConfig().to_dict() == {"kind": "alignment", "tau": 0.1, "window": 1}  # records unchanged
    assert hash(HeadConfig()) == hash(HeadConfig("alignment", 0.1, 1))
    with_w = HeadConfig("cca", params=random_params(4, 0))
    assert with_w == HeadConfig("cca") and with_w.to_dict() == {"kind": "cca", "tau": 0.2, "window": None}
    assert HeadConfig.from_dict({"kind": "prototype", "tau": 0.1, "window": 1}).tau == 0.1
    assert HeadConfig("cca").as_kind("alignment") == HeadConfig()
    with pytest.raises(SSTEdgeError, match="no weights"):
        head_logits_np(np.zeros((1, 4, 4), np.float32), np.zeros((1, 1, 4, 4), np.float32), HeadConfig("cca"))


def test_bad_weights_are_refused(tmp_path) -> None:
    p = random_params(5, 0)
    with pytest.raises(SSTEdgeError, match="conv1.weight has shape"):
        check_params({**p, "conv1.weight": np.zeros((3, 1, 3, 3), np.float32)}, 5)
    f = save_head_file(tmp_path / "head.safetensors", p)
    assert set(load_head_file(f, 5)) == set(p)
    with pytest.raises(SSTEdgeError, match="reduce has shape"):
        load_head_file(f, 7)
    f.write_bytes(b"garbage")
    with pytest.raises(SSTEdgeError, match="head.safetensors"):
        load_head_file(f, 5)
    with pytest.raises(SSTEdgeError, match="missing"):
        load_head_file(tmp_path / "nope.safetensors", 5)
