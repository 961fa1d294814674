"""The cca head in torch (training and evaluation): RENet's cross-correlational attention over frames.

The definition, its constants, its cost per query and the numpy twin the device runs are in
`sst_edge.device.cca`; both agree to 1e-5 (tests/test_cca.py). `cca_logits` is the functional form on a
dict of weights (evaluation of a saved run), `CCAHead` the trainable module holding them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .device import cca as spec
from .device.cca import CCA_EPS, CCA_NAMES, cca_dim, check_params
from .device.heads import _EPS, _check

PREFIX = "fewshot."  # the head's tensors in a run's weights file (beside the supernet's; its own "head." is
#                      the supernet's FrameFeatures)


def _side_softmax(x: torch.Tensor, dim: int) -> torch.Tensor:
    z = (x - x.mean(dim, keepdim=True)) / torch.sqrt(x.var(dim, keepdim=True, unbiased=False) + CCA_EPS)
    return (z / spec.CCA_TEMPERATURE_ATTN).softmax(dim)


def _reduce(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return F.normalize(F.relu((x - x.mean(-1, keepdim=True)) @ w.t()), dim=-1, eps=_EPS)


def cca_logits(query: torch.Tensor, support: torch.Tensor, params: Mapping[str, torch.Tensor],
               tau: float = 0.2) -> torch.Tensor:
    """Logits ``[Q, N]`` of query ``[Q, T, C]`` against support ``[N, K, T, C]`` (device/cca.py's steps)."""
    _check(query.shape, support.shape)
    nq, tq, _ = query.shape
    n, k, ts, _ = support.shape
    qr, sr = _reduce(query, params["reduce"]), _reduce(support, params["reduce"])
    corr = torch.einsum("nksd,qtd->qnkst", sr, qr).reshape(-1, 1, ts, tq)

    def conv(y: torch.Tensor) -> torch.Tensor:
        h = F.relu(F.conv2d(y, params["conv1.weight"], params["conv1.bias"], padding=1))
        return F.conv2d(h, params["conv2.weight"], params["conv2.bias"], padding=1)

    r = (conv(corr) + conv(corr.transpose(-1, -2)).transpose(-1, -2)).reshape(nq, n, k, ts, tq)
    attn_s = _side_softmax(r, -2).sum(-1)  # [Q, N, K, Ts]
    attn_q = _side_softmax(r, -1).sum(-2)  # [Q, N, K, Tq]
    sp = torch.einsum("qnks,nksc->qnkc", attn_s, F.normalize(support, dim=-1, eps=_EPS)).mean(2)
    qp = torch.einsum("qnkt,qtc->qnkc", attn_q, F.normalize(query, dim=-1, eps=_EPS)).mean(2)
    return (F.normalize(sp, dim=-1, eps=_EPS) * F.normalize(qp, dim=-1, eps=_EPS)).sum(-1) / tau


class CCAHead(nn.Module):
    """The trainable cca head for features `channels` wide (PyTorch's default initialisation)."""

    def __init__(self, channels: int):
        super().__init__()
        self.channels = channels
        self.reduce = nn.Parameter(torch.empty(cca_dim(channels), channels))
        nn.init.kaiming_uniform_(self.reduce, a=math.sqrt(5))  # nn.Linear's
        self.conv1 = nn.Conv2d(1, spec.CCA_HIDDEN, spec.CCA_KERNEL, padding=1)
        self.conv2 = nn.Conv2d(spec.CCA_HIDDEN, 1, spec.CCA_KERNEL, padding=1)

    def params(self) -> dict[str, torch.Tensor]:
        return {"reduce": self.reduce, "conv1.weight": self.conv1.weight, "conv1.bias": self.conv1.bias,
                "conv2.weight": self.conv2.weight, "conv2.bias": self.conv2.bias}

    def forward(self, query: torch.Tensor, support: torch.Tensor, tau: float = 0.2) -> torch.Tensor:
        return cca_logits(query, support, self.params(), tau)

    def arrays(self) -> dict[str, np.ndarray]:
        """The weights as float32 numpy arrays (the device's form, device/cca.py)."""
        return {k: v.detach().float().cpu().numpy().copy() for k, v in self.params().items()}

    def tensors(self, prefix: str = PREFIX) -> dict[str, torch.Tensor]:
        """The weights under `prefix`, to be saved beside the supernet's."""
        return {prefix + k: v.detach() for k, v in self.params().items()}

    def load(self, weights: Mapping[str, torch.Tensor | np.ndarray]) -> None:
        """Copy weights (unprefixed names) into the module, checked against its shapes."""
        check_params(weights, self.channels)
        with torch.no_grad():
            for k, v in self.params().items():
                v.copy_(torch.as_tensor(np.asarray(weights[k]) if isinstance(weights[k], np.ndarray)
                                        else weights[k]))


def prefixed(tensors: Mapping[str, torch.Tensor], prefix: str = PREFIX) -> dict[str, torch.Tensor]:
    """The head's tensors of a weights file (names without `prefix`); empty when it holds none."""
    n = len(prefix)
    return {k[n:]: v for k, v in tensors.items() if k.startswith(prefix) and k[n:] in CCA_NAMES}


def torch_params(params: Mapping[str, np.ndarray | torch.Tensor],
                 like: torch.Tensor) -> dict[str, torch.Tensor]:
    """Weights (numpy, from a record) as tensors on `like`'s device and dtype."""
    return {k: torch.as_tensor(np.asarray(v) if isinstance(v, np.ndarray) else v).to(like.device, like.dtype)
            for k, v in params.items()}
