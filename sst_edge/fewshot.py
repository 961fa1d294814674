"""Few-shot heads in torch (training and evaluation: batched over queries and classes, differentiable).

The definitions, the head settings (`HeadConfig`) and the numpy twin the device runs live in
`sst_edge.device.heads`; both agree to 1e-5 (tests/test_fewshot.py). The idea of a non-parametric,
query-specific prototype is the paper's; the formula, tau and the window are ours (see device/heads.py).
The learned cca head (RENet's cross-correlational attention over frames) is in `sst_edge.fewshot_cca`.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .device.heads import _EPS, _check, _window_mask
from .device.settings import DEFAULT_TAU, DEFAULT_WINDOW, HeadConfig
from .errors import SSTEdgeError
from .fewshot_cca import CCAHead, cca_logits, torch_params


def prototype_logits(query: torch.Tensor, support: torch.Tensor, tau: float = DEFAULT_TAU) -> torch.Tensor:
    """ProtoNet: -||q - mean_k s_k||^2 / tau on time-averaged, normalised clip embeddings. [Q, N]."""
    _check(query.shape, support.shape)
    q = F.normalize(F.normalize(query, dim=-1, eps=_EPS).mean(1), dim=-1, eps=_EPS)  # [Q, C]
    s = F.normalize(F.normalize(support, dim=-1, eps=_EPS).mean(2), dim=-1, eps=_EPS)  # [N, K, C]
    p = s.mean(1)  # [N, C]
    return -(q[:, None, :] - p[None, :, :]).pow(2).sum(-1) / tau


def alignment_logits(query: torch.Tensor, support: torch.Tensor, tau: float = DEFAULT_TAU,
                     window: int | None = DEFAULT_WINDOW) -> torch.Tensor:
    """SST's query-specific prototype: per query frame, an attention-weighted support frame. [Q, N]."""
    _check(query.shape, support.shape)
    n, k, ts, c = support.shape
    q = F.normalize(query, dim=-1, eps=_EPS)  # [Q, T, C]
    s = F.normalize(support, dim=-1, eps=_EPS).reshape(n, k * ts, c)  # [N, K*T', C], (k, t') row-major
    sim = torch.einsum("qtc,njc->qntj", q, s) / tau  # [Q, N, T, K*T']
    mask = _window_mask(q.shape[1], ts, window)
    if mask is not None:
        sim = sim.masked_fill(torch.from_numpy(np.tile(mask, (1, k))).to(sim.device), float("-inf"))
    a = sim.softmax(-1)
    p = torch.einsum("qntj,njc->qntc", a, s)  # [Q, N, T, C]
    return -(q[:, None] - p).pow(2).sum(-1).mean(-1) / tau


def head_logits(query: torch.Tensor, support: torch.Tensor, head: HeadConfig,
                module: nn.Module | None = None) -> torch.Tensor:
    """The logits of `head`; a cca head takes its weights from `module` (a `CCAHead`, training) or else
    from `head.params` (numpy arrays loaded from a run: evaluation, search)."""
    if head.kind == "prototype":
        return prototype_logits(query, support, head.tau)
    if head.kind == "cca":
        if module is not None:
            return module(query, support, head.tau)
        if head.params is None:
            raise SSTEdgeError("the cca head has no weights attached: they come from a cca run")
        return cca_logits(query, support, torch_params(head.params, query), head.tau)
    return alignment_logits(query, support, head.tau, head.window)


__all__ = ["CCAHead", "alignment_logits", "cca_logits", "head_logits", "prototype_logits"]
