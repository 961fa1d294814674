"""The cca head in numpy (the device's): RENet's cross-correlational attention on per-frame features.

RENet (Kang et al., ICCV 2021, `models/renet.py::RENet.cca`) correlates the 5x5 positions of a support
and a query feature map; here the positions are frames (a "temporal
CCA"), so it fits the gallery as it is, ``[N, K, T, C]`` per-frame features. For each (query, support clip):

1. centre each frame feature on its channel mean; reduce C -> d = min(64, C) with a learned linear map (no
   bias), ReLU, L2-normalise (RENet's `cca_1x1`, whose BatchNorm we drop: see 3);
2. the correlation matrix ``[T_s, T_q]`` of cosines;
3. refine it symmetrically, r(x) = conv(x) + conv(x^T)^T with conv = Conv2d(1->16, 3x3, pad 1), ReLU,
   Conv2d(16->1, 3x3, pad 1), both with a bias (RENet's 4-D SepConv4d become 2-D on T_s x T_q). No
   BatchNorm anywhere: a train-mode BatchNorm normalises with the episode's statistics, which the device
   does not have, so this numpy twin could not be exact; without it, it is (tests/test_cca.py, 1e-5);
4. on each side, Gaussian-normalise over that side's positions (zero mean, unit POPULATION variance, eps
   1e-5; RENet's `torch.var` is the unbiased one: with T = 4..8 positions that differs by a factor
   sqrt(T/(T-1)) in scale, which the softmax temperature would absorb) and softmax(x / 5.0) (RENet's
   `temperature_attn`) over them;
5. frame weights attn_s[t_s] = sum over t_q of the support-side softmax, attn_q[t_q] = sum over t_s of the
   query-side softmax; pooled = the weighted sum of the ORIGINAL L2-normalised frame features (C wide);
6. both pooled vectors are averaged over the K shots of a class (attention is per support clip, averaged
   after, as RENet does); logit = cosine(pooled support, pooled query) / tau (tau 0.2, RENet's).

Weights (float32, `CCA_SHAPES`): ``reduce [d, C]``, ``conv1.weight [16, 1, 3, 3]``, ``conv1.bias [16]``,
``conv2.weight [1, 16, 3, 3]``, ``conv2.bias [1]``: 64 C + 305 numbers (10,545 at C = 160). The torch
twin (training) is `sst_edge.fewshot_cca.CCAHead`; a model ships them in head.safetensors (card
"head_weights": file, sha256, shapes, constants), read here with `safetensors.numpy`.

Cost per query and label with K shots (T frames, C wide): K x (the reduction of T support frames,
2 T^2 d for the correlation, two symmetric conv stacks on T x T, 2 x 2 x (16 + 16) x 9 T^2, the two
softmaxes and 2 T C of pooling) -- about K (2 T d C + 2 T^2 d + 1,150 T^2) multiply-adds, 0.2 M at T = 8,
C = 160, K = 1 (the query's own reduction, T d C, is shared by all labels). The alignment head costs
K x 2 T^2 C (20 k at the same sizes): cca is ~10x dearer per label, still far below one embedding. The
support reduction depends only on the support clip, but the attention depends on the query, so no
prototype can be pooled ahead of time: the gallery keeps every frame feature, as for alignment, and
enrollment still costs one embedding per clip (no head work at all).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import SSTEdgeError

CCA_MAX_DIM = 64           # the reduced width d = min(64, C) (RENet's cca_1x1: 640 -> 64)
CCA_HIDDEN = 16            # channels between the two refinement convolutions (RENet's planes [16, 1])
CCA_KERNEL = 3
CCA_TEMPERATURE_ATTN = 5.0  # RENet's temperature_attn
CCA_EPS = 1e-5              # of the Gaussian normalisation (population variance)
CCA_NAMES = ("reduce", "conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias")
HEAD_FILE = "head.safetensors"  # a model directory's head weights (the card's "head_weights")
_EPS = 1e-12  # of L2 normalisation, as the other heads


def cca_dim(channels: int) -> int:
    return min(CCA_MAX_DIM, channels)


def cca_shapes(channels: int) -> dict[str, tuple[int, ...]]:
    """The shape of each weight for features `channels` wide."""
    d, h, k = cca_dim(channels), CCA_HIDDEN, CCA_KERNEL
    return {"reduce": (d, channels), "conv1.weight": (h, 1, k, k), "conv1.bias": (h,),
            "conv2.weight": (1, h, k, k), "conv2.bias": (1,)}


def cca_constants(channels: int) -> dict[str, Any]:
    """What a card records of the head besides its weights (all fixed by the code, recorded to be checked)."""
    return {"dim": cca_dim(channels), "hidden": CCA_HIDDEN, "kernel": CCA_KERNEL,
            "temperature_attn": CCA_TEMPERATURE_ATTN, "eps": CCA_EPS, "variance": "population"}


def params_problems(params: Mapping[str, Any], channels: int | None = None) -> list[str]:
    """Why `params` are not the weights of a cca head (for features `channels` wide, when given)."""
    if not isinstance(params, Mapping):
        return ["not a mapping of weights"]
    reduce = params.get("reduce")
    c = channels if channels is not None else (int(reduce.shape[1]) if getattr(reduce, "ndim", 0) == 2 else 1)
    want = cca_shapes(c)
    problems = [f"missing weight {n!r}" for n in want if n not in params]
    problems += [f"unexpected weight {n!r}" for n in params if n not in want]
    problems += [f"{n} has shape {tuple(params[n].shape)}, expected {want[n]}" for n in want
                 if n in params and tuple(params[n].shape) != want[n]]
    problems += [f"{n} is not finite" for n in want if n in params
                 and tuple(params[n].shape) == want[n] and not np.isfinite(np.asarray(params[n])).all()]
    return problems


def check_params(params: Any, channels: int | None = None, path: str | Path | None = None) -> None:
    problems = params_problems(params, channels)
    if problems:
        raise SSTEdgeError("not the weights of a cca head", path, problems)


def _normalize(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), _EPS)


def _conv3x3(x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """Conv2d(padding 1) as im2col: x [B, Cin, H, W], weight [Cout, Cin, 3, 3] -> [B, Cout, H, W]."""
    _, _, h, w = x.shape
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    cols = np.stack([xp[:, :, dy:dy + h, dx:dx + w] for dy in range(3) for dx in range(3)], axis=2)
    return np.einsum("bikhw,oik->bohw", cols, weight.reshape(weight.shape[0], weight.shape[1], 9)) \
        + bias[None, :, None, None]


def _refine(x: np.ndarray, p: Mapping[str, np.ndarray]) -> np.ndarray:
    def conv(y: np.ndarray) -> np.ndarray:
        h = np.maximum(_conv3x3(y, p["conv1.weight"], p["conv1.bias"]), 0)
        return _conv3x3(h, p["conv2.weight"], p["conv2.bias"])
    return conv(x) + np.swapaxes(conv(np.swapaxes(x, -1, -2)), -1, -2)


def _side_softmax(x: np.ndarray, axis: int) -> np.ndarray:
    z = (x - x.mean(axis, keepdims=True)) / np.sqrt(x.var(axis, keepdims=True) + CCA_EPS)
    z = z / CCA_TEMPERATURE_ATTN
    z = np.exp(z - z.max(axis, keepdims=True))
    return z / z.sum(axis, keepdims=True)


def _reduce(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    x = x - x.mean(-1, keepdims=True)
    return _normalize(np.maximum(x @ w.T, 0))


def cca_logits_np(query: np.ndarray, support: np.ndarray, params: Mapping[str, np.ndarray],
                  tau: float = 0.2) -> np.ndarray:
    """Logits ``[Q, N]`` of query ``[Q, T, C]`` against support ``[N, K, T, C]`` (the input's float dtype)."""
    if len(query.shape) != 3 or len(support.shape) != 4 or query.shape[-1] != support.shape[-1]:
        raise ValueError(f"expected query [Q, T, C] and support [N, K, T, C], got {tuple(query.shape)} and "
                         f"{tuple(support.shape)}")
    check_params(params, query.shape[-1])
    dt = np.result_type(query.dtype, support.dtype, np.float32)
    p = {k: np.asarray(v, dt) for k, v in params.items()}
    query, support = query.astype(dt, copy=False), support.astype(dt, copy=False)
    nq, tq, _ = query.shape
    n, k, ts, _ = support.shape
    qr, sr = _reduce(query, p["reduce"]), _reduce(support, p["reduce"])  # [Q, Tq, d], [N, K, Ts, d]
    corr = np.einsum("nksd,qtd->qnkst", sr, qr)  # [Q, N, K, Ts, Tq]
    r = _refine(corr.reshape(-1, 1, ts, tq), p).reshape(nq, n, k, ts, tq)
    attn_s = _side_softmax(r, -2).sum(-1)  # [Q, N, K, Ts]: over support frames, for each query frame
    attn_q = _side_softmax(r, -1).sum(-2)  # [Q, N, K, Tq]
    sp = np.einsum("qnks,nksc->qnkc", attn_s, _normalize(support)).mean(2)  # [Q, N, C]
    qp = np.einsum("qnkt,qtc->qnkc", attn_q, _normalize(query)).mean(2)
    return (_normalize(sp) * _normalize(qp)).sum(-1) / tau


def load_head_file(path: str | Path, channels: int | None = None) -> dict[str, np.ndarray]:
    """The cca weights of a head.safetensors (safetensors never runs code), checked."""
    path = Path(path)
    if not path.is_file():
        raise SSTEdgeError("the cca head's weights file is missing", path)
    import safetensors.numpy as stn  # the device install has it (a core dependency)
    try:
        params = {k: v.astype(np.float32) for k, v in stn.load_file(str(path)).items()}
    except Exception as e:  # safetensors raises SafetensorError and others for a foreign file
        raise SSTEdgeError(f"not a readable safetensors file of cca head weights ({e})", path) from None
    check_params(params, channels, path)
    return params


def save_head_file(path: str | Path, params: Mapping[str, np.ndarray]) -> Path:
    import safetensors.numpy as stn
    path = Path(path)
    stn.save_file({k: np.ascontiguousarray(params[k], np.float32) for k in CCA_NAMES}, str(path))
    return path


def card_record(path: str | Path, params: Mapping[str, np.ndarray], channels: int) -> dict[str, Any]:
    """The card's "head_weights" for the head file `path` that export wrote from `params`."""
    from ..fileio import sha256_file
    return {"kind": "cca", "file": Path(path).name, "sha256": sha256_file(path),
            "shapes": {k: list(np.shape(params[k])) for k in CCA_NAMES}, "constants": cca_constants(channels)}


def card_params(card: Any) -> dict[str, np.ndarray]:
    """The cca weights a model card ships, checked: the card records them (else: not a cca model), the
    file's sha256 and size are the card's (else: tampered), its shapes and constants the card's and ours."""
    from .card import CARD_FILE, verify_files
    where = card.path or CARD_FILE
    rec = card.head_weights
    if not isinstance(rec, dict) or rec.get("kind") != "cca":
        raise SSTEdgeError("the model ships no cca head weights (its card has no \"head_weights\"): export a "
                           "run trained with `sst-edge train --head cca`", where)
    name = rec["file"]
    if name not in card.files:
        raise SSTEdgeError(f"the cca head file {name} is not among the card's files", where)
    folder = Path(card.path).parent if card.path is not None else Path(".")
    verify_files(card, (name,))
    if rec["sha256"] != card.files[name]["sha256"]:
        raise SSTEdgeError(f"{name}: the sha256 in \"head_weights\" differs from the one in `files`", where)
    channels = card.feature_dim
    if rec.get("constants") != cca_constants(channels):
        raise SSTEdgeError(f"the cca head in the card was made with other constants than this runtime's "
                           f"({rec.get('constants')} vs {cca_constants(channels)}): re-export it", where)
    params = load_head_file(folder / name, channels)
    shapes = {k: list(v.shape) for k, v in params.items()}
    if shapes != rec["shapes"]:
        raise SSTEdgeError(f"{name} holds shapes {shapes}, the card says {rec['shapes']}", folder / name)
    return params


def card_head(card: Any, kind: str | None = None) -> Any:
    """The head `kind` (default: the card's) as the card defines it (`HeadConfig.as_kind`), with the
    model's cca weights attached when it is cca (`card_params`: an error naming the file without them)."""
    head = card.head if kind in (None, card.head.kind) else card.head.as_kind(kind)
    return head.with_params(card_params(card)) if head.kind == "cca" else head
