"""Cheaper temporal candidates beside SAB/TAB: `tam` (temporal aggregation) and `msq` (MotionSqueeze).

Both replace the attention of a choice block and keep its pre-norm MLP with residuals, so a layer's
candidates differ only in their token mixer. Neither has attention, so the layer's heads label does not
change them (config.HEADLESS_OPS). Like SpaceTimeBlock, each carries shape and FLOPs formulas counting
multiply-adds as fvcore does (a test checks): fvcore counts Linear, MatMul, Conv and LayerNorm and skips
element-wise ops, softmax, reductions and gathers.

`tps` is SpaceTimeBlock with a temporal shift (blocks.py, shift.py); `make_block` builds any op.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .._nni import FlopsResult, profiler_leaf_module
from .blocks import SpaceTimeBlock, _init_weights, _layer_norm_flops


class _MixerBlock(nn.Module):
    """x + mixer(norm1(x)), then x + MLP(norm2(x)): the choice block's frame around a token mixer."""

    mode = ""  # the op name, as SpaceTimeBlock.mode

    def __init__(self, dim: int, mlp_ratio: float):
        super().__init__()
        hidden = int(round(dim * mlp_ratio))
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def mix(self, h: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.mix(self.norm1(x))
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))

    def _shape_forward(self, x: Any) -> Any:
        return x.real_shape

    def _frame_cost(self, t: int, n: int, c: int) -> FlopsResult:
        """Two LayerNorms and the MLP (what every choice block has)."""
        hidden = self.fc1.out_features
        flops = 2 * _layer_norm_flops(t * n * c) + 2 * t * n * c * hidden
        params = 4 * c + (c * hidden + hidden) + (hidden * c + c)
        return FlopsResult(flops, params)


@profiler_leaf_module
class TemporalAggregation(_MixerBlock):
    """tam (Fan et al., NeurIPS 2019): y_t = ReLU(w_-1 * x_{t-1} + w_0 * x_t + w_+1 * x_{t+1}).

    One weight vector per channel per offset, zero padding in time: a bias-free depthwise (3, 1)
    convolution over [B, C, T, N], which exports as one Conv and which fvcore counts (3TNC).
    """

    mode = "tam"

    def __init__(self, dim: int, mlp_ratio: float, offsets: int = 3):
        super().__init__(dim, mlp_ratio)
        self.aggregate = nn.Conv2d(dim, dim, (offsets, 1), padding=(offsets // 2, 0), groups=dim, bias=False)
        _init_weights(self)
        nn.init.trunc_normal_(self.aggregate.weight, std=0.02)  # starts near identity, like the others

    def mix(self, h: torch.Tensor) -> torch.Tensor:
        y = self.aggregate(h.permute(0, 3, 1, 2))  # [B, C, T, N]
        return F.relu(y).permute(0, 2, 3, 1)

    def _count_flops(self, inputs: tuple, outputs: Any) -> FlopsResult:
        _, t, n, c = inputs[0]
        k = self.aggregate.kernel_size[0]
        return self._frame_cost(t, n, c) + FlopsResult(k * t * n * c, k * c)


def msq_radius(grid: int) -> int:
    """Displacement window radius at token resolution: about the paper's 7 of 28 (a quarter of the grid)."""
    return max(1, (grid + 2) // 4)


@profiler_leaf_module
class MotionSqueeze(_MixerBlock):
    """msq (Kwon et al., ECCV 2020) at token resolution: motion features from adjacent-frame correlation.

    Features reduced to C/4 and L2-normalised per token; frames t and t+1 correlated by one N x N MatMul
    with a constant window mask (|dy|, |dx| <= r) instead of the reference's custom CUDA op. From it: the
    top-1 value in the window (confidence) and a soft-argmax displacement (u, v) in the paper's
    Gaussian-kernel form (Gaussian sigma = 5r/7 around the argmax times ReLU(correlation), temperature
    100, softmax over the window, expected displacement / r). [u, v, confidence] go through a small
    two-layer projection to C, added residually; the last pair's features are repeated to keep T.
    The expected displacement is p @ positions - own position (a MatMul), so fvcore counts it.
    """

    mode = "msq"

    def __init__(self, dim: int, mlp_ratio: float, frames: int, grid: int, temperature: float = 100.0):
        super().__init__(dim, mlp_ratio)
        if frames < 2:
            raise ValueError("msq needs at least 2 frames")
        self.radius = msq_radius(grid)
        self.temperature = temperature
        reduced = max(4, dim // 4)
        self.reduce = nn.Linear(dim, reduced)
        self.fc_a = nn.Linear(3, reduced)
        self.fc_b = nn.Linear(reduced, dim)
        ys, xs = torch.meshgrid(torch.arange(grid), torch.arange(grid), indexing="ij")
        pos = torch.stack([xs.flatten(), ys.flatten()], dim=1).float()  # [N, 2]: (x, y)
        diff = pos[None, :, :] - pos[:, None, :]  # [N, N, 2]: displacement from token p to token q
        inside = (diff.abs() <= self.radius).all(-1)
        sigma = 5.0 * self.radius / 7.0
        self.register_buffer("pos", pos, persistent=False)
        self.register_buffer("mask_bias", torch.where(inside, 0.0, -1e4), persistent=False)
        self.register_buffer("gauss", torch.exp(-(diff ** 2).sum(-1) / (2 * sigma ** 2)), persistent=False)
        _init_weights(self)

    def motion(self, h: torch.Tensor) -> torch.Tensor:
        """h [B, T, N, C] -> [B, T, N, 3]: (u, v, confidence) of each token from frame t to t+1."""
        f = self.reduce(h)
        f = f / torch.sqrt((f * f).sum(-1, keepdim=True) + 1e-6)
        corr = f[:, :-1] @ f[:, 1:].transpose(-1, -2)  # [B, T-1, N, N]
        top, arg = (corr + self.mask_bias).max(dim=-1)
        weight = F.relu(corr) * self.gauss[arg] * self.temperature + self.mask_bias
        p = torch.softmax(weight, dim=-1)
        disp = (p @ self.pos - self.pos) / self.radius  # expected (dx, dy)
        feat = torch.cat([disp, F.relu(top).unsqueeze(-1)], dim=-1)
        return torch.cat([feat, feat[:, -1:]], dim=1)

    def mix(self, h: torch.Tensor) -> torch.Tensor:
        return self.fc_b(F.gelu(self.fc_a(self.motion(h))))

    def _count_flops(self, inputs: tuple, outputs: Any) -> FlopsResult:
        _, t, n, c = inputs[0]
        r = self.reduce.out_features
        flops = (t * n * c * r  # reduce
                 + (t - 1) * n * n * r  # correlation
                 + (t - 1) * n * n * 2  # expected displacement
                 + t * n * 3 * r + t * n * r * c)  # projection
        params = (c * r + r) + (3 * r + r) + (r * c + c)
        return self._frame_cost(t, n, c) + FlopsResult(flops, params)


def make_block(op: str, dim: int, heads: Any, head_dim: int, mlp_ratio: float, frames: int, grid: int,
               layer: int) -> nn.Module:
    """One candidate of a choice block; `heads` only reaches the ops with attention."""
    if op in ("tab", "sab", "tps"):
        return SpaceTimeBlock(dim, heads, head_dim, mlp_ratio, op, frames, grid, layer)
    if op == "tam":
        return TemporalAggregation(dim, mlp_ratio)
    if op == "msq":
        return MotionSqueeze(dim, mlp_ratio, frames, grid)
    raise ValueError(f"unknown op {op!r}")

