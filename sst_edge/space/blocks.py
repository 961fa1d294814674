"""The building blocks of the SST space: patch embedding, TAB/SAB choice blocks, downsample block, output.

Every block keeps tokens as [B, T, N, C] (clips, frames, spatial positions, channels), so FLOPs counted
"per sample" by NNI's profiler are per clip. Each block carries its own shape and FLOPs formulas
(`_shape_forward`, `_count_flops`) because NNI's generic tracer cannot see inside attention; the formulas
count multiply-adds exactly as fvcore does (see cost/flops.py), which a test checks.

Provenance: the paper (Table 1) gives the blocks and their order: patch embedding to H/16, TAB or SAB with
6/12/16 heads, a downsample block between stages. Their insides are ours: the patch embedding's 3x3
convolutions, BatchNorm and GELU, the position embeddings, pre-norm attention + MLP, the MLP ratio,
head_dim, and the SDB as a strided convolution then a 12-head SAB (12 heads: our reading of Table 1).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .._nni import FlopsResult, MutableLinear, MutableShape, ParametrizedModule, profiler_leaf_module
from .attention import attention
from .shift import channel_fold, channel_shift, gather_tokens, patch_shift_index


def _out_features(linear: nn.Module) -> Any:
    """Width of a linear layer: an NNI expression inside the space, an int once frozen."""
    if isinstance(linear, ParametrizedModule):
        return linear.args["out_features"]
    return linear.out_features


def _layer_norm_flops(numel: Any) -> Any:
    return 5 * numel  # fvcore's estimate for an affine LayerNorm


def _init_weights(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


@profiler_leaf_module
class SpaceTimeBlock(nn.Module):
    """Pre-norm attention + MLP with residuals; `mode` picks the token grouping.

    sab: self-attention over the N spatial tokens of each frame.
    tab: self-attention over the T temporal tokens at each spatial position (divided space-time attention).
    tps: sab with a temporal shift (shift.py): odd layers shift patches before q/k/v and back after
         attention, even layers shift channels (TSM), as TPS alternates them. sab's shapes and cost,
         its own weights.
    Attention width is heads x head_dim (AutoFormer style), so `heads` (an int or an NNI choice) changes cost.
    q, k, v are separate layers: slicing a fused qkv for fewer heads would mix q, k and v between heads.
    """

    def __init__(self, dim: int, heads: Any, head_dim: int, mlp_ratio: float, mode: str,
                 frames: int = 0, grid: int = 0, layer: int = 1):
        super().__init__()
        if mode not in ("tab", "sab", "tps"):
            raise ValueError(f"mode must be 'tab', 'sab' or 'tps', got {mode!r}")
        self.mode = mode
        self.patch_shift = mode == "tps" and layer % 2 == 1
        self.fold = channel_fold(dim)
        if self.patch_shift:
            if frames < 1 or grid < 1:
                raise ValueError("tps needs the clip's frames and token grid")
            self.frames, self.tokens, self.dim = frames, grid * grid, dim
            self.register_buffer("shift_fwd", patch_shift_index(frames, grid), persistent=False)
            back = patch_shift_index(frames, grid, inverse=True)
            self.register_buffer("shift_back", back, persistent=False)
        self.head_dim = head_dim
        width = heads * head_dim
        hidden = int(round(dim * mlp_ratio))
        self.norm1 = nn.LayerNorm(dim)
        self.q = MutableLinear(dim, width)
        self.k = MutableLinear(dim, width)
        self.v = MutableLinear(dim, width)
        self.proj = MutableLinear(width, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        _init_weights(self)

    def _attend(self, h: torch.Tensor) -> torch.Tensor:
        """h: [batch, seq, C] -> [batch, seq, C]. SDPA; exported as plain MatMul/Softmax, or as ORT's fused
        attention for targets that ask for it (space/attention.py)."""
        q = self.q(h)
        return self.proj(attention(q, self.k(h), self.v(h), int(q.shape[-1]) // self.head_dim))

    def _attend_shifted(self, h: torch.Tensor) -> torch.Tensor:
        """tps with patch shift: h [B, T, N, C] shifted, attended per frame, projected, shifted back
        (the projection acts per token, so shifting back after it equals shifting back before it)."""
        b, t, n, c = h.shape
        h = gather_tokens(h, self.shift_fwd, self.frames, self.tokens, self.dim)
        h = self._attend(h.reshape(b * t, n, c)).reshape(b, t, n, c)
        return gather_tokens(h, self.shift_back, self.frames, self.tokens, self.dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, n, c = x.shape
        h = self.norm1(x)
        if self.patch_shift:
            h = self._attend_shifted(h)
        elif self.mode in ("sab", "tps"):
            if self.mode == "tps":
                h = channel_shift(h, self.fold)
            h = self._attend(h.reshape(b * t, n, c)).reshape(b, t, n, c)
        else:
            h = h.transpose(1, 2).reshape(b * n, t, c)
            h = self._attend(h).reshape(b, n, t, c).transpose(1, 2)
        x = x + h
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))

    def _shape_forward(self, x: Any) -> Any:
        return x.real_shape

    def _count_flops(self, inputs: tuple, outputs: Any) -> FlopsResult:
        _, t, n, c = inputs[0]
        width = _out_features(self.q)
        hidden = self.fc1.out_features
        tokens = t * n
        attn = 2 * n * t * t * width if self.mode == "tab" else 2 * t * n * n * width
        flops = (
            2 * _layer_norm_flops(tokens * c)
            + 4 * tokens * c * width  # q, k, v, proj
            + attn  # QK^T and AV
            + 2 * tokens * c * hidden  # MLP
        )
        params = 4 * c + 3 * (c * width + width) + (width * c + c) + (c * hidden + hidden) + (hidden * c + c)
        return FlopsResult(flops, params)


def _conv_bn(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, 2, 1, bias=False), nn.BatchNorm2d(cout), nn.GELU()]


def _grid_after_stride2(g: int) -> int:
    return (g - 1) // 2 + 1  # 3x3 convolution, stride 2, padding 1


@profiler_leaf_module
class PatchEmbed(nn.Module):
    """Four 3x3 stride-2 convolutions to H/16 per frame, then learned spatial and temporal positions.

    The temporal position lets TAB tell a motion from the same motion played backwards.
    """

    def __init__(self, channels: tuple[int, ...], frames: int, size: int):
        super().__init__()
        c0, c1, c2, c3 = channels
        self.convs = nn.Sequential(*_conv_bn(3, c0), *_conv_bn(c0, c1), *_conv_bn(c1, c2),
                                   nn.Conv2d(c2, c3, 3, 2, 1))
        self.grid = size
        for _ in range(4):
            self.grid = _grid_after_stride2(self.grid)
        self.pos_space = nn.Parameter(torch.zeros(1, 1, self.grid * self.grid, c3))
        self.pos_time = nn.Parameter(torch.zeros(1, frames, 1, c3))
        nn.init.trunc_normal_(self.pos_space, std=0.02)
        nn.init.trunc_normal_(self.pos_time, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c, h, w = x.shape
        y = self.convs(x.reshape(b * t, c, h, w))
        y = y.flatten(2).transpose(1, 2).reshape(b, t, -1, y.shape[1])
        return y + self.pos_space + self.pos_time

    def _shape_forward(self, x: Any) -> Any:
        b, t = x.real_shape[0], x.real_shape[1]
        return MutableShape(b, t, self.grid * self.grid, self.pos_space.shape[-1])

    def _count_flops(self, inputs: tuple, outputs: Any) -> FlopsResult:
        _, t, _, h, _ = inputs[0]
        flops = params = 0
        g = h
        for m in self.convs:
            if isinstance(m, nn.Conv2d):
                g = _grid_after_stride2(g)
                flops += t * g * g * m.out_channels * m.in_channels * 9
                params += m.weight.numel() + (m.bias.numel() if m.bias is not None else 0)
            elif isinstance(m, nn.BatchNorm2d):
                flops += 2 * t * g * g * m.num_features  # fvcore: eval-mode affine batch norm
                params += 2 * m.num_features
        params += self.pos_space.numel() + self.pos_time.numel()
        return FlopsResult(flops, params)


@profiler_leaf_module
class SpatialDownsample(nn.Module):
    """SDB: halves H and W and widens channels (strided 3x3 convolution per frame), then a fixed SAB."""

    def __init__(self, cin: int, cout: int, grid: int, heads: int, head_dim: int, mlp_ratio: float):
        super().__init__()
        self.grid = grid
        self.out_grid = _grid_after_stride2(grid)
        self.reduce = nn.Conv2d(cin, cout, 3, 2, 1)
        self.block = SpaceTimeBlock(cout, heads, head_dim, mlp_ratio, "sab")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, n, c = x.shape
        y = x.transpose(2, 3).reshape(b * t, c, self.grid, self.grid)
        y = self.reduce(y)
        y = y.flatten(2).transpose(1, 2).reshape(b, t, -1, y.shape[1])
        return self.block(y)

    def _shape_forward(self, x: Any) -> Any:
        b, t = x.real_shape[0], x.real_shape[1]
        return MutableShape(b, t, self.out_grid * self.out_grid, self.reduce.out_channels)

    def _count_flops(self, inputs: tuple, outputs: Any) -> FlopsResult:
        _, t, _, _ = inputs[0]
        g, cin, cout = self.out_grid, self.reduce.in_channels, self.reduce.out_channels
        conv = FlopsResult(t * g * g * cout * cin * 9, cout * cin * 9 + cout)
        inner = (1, t, g * g, cout)
        return conv + self.block._count_flops((inner,), inner)


@profiler_leaf_module
class FrameFeatures(nn.Module):
    """Final norm and spatial pooling: [B, T, N, C] -> per-frame features [B, T, C]."""

    def __init__(self, dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x).mean(dim=2)

    def _shape_forward(self, x: Any) -> Any:
        s = x.real_shape
        return MutableShape(s[0], s[1], s[3])

    def _count_flops(self, inputs: tuple, outputs: Any) -> FlopsResult:
        _, t, n, c = inputs[0]
        return FlopsResult(_layer_norm_flops(t * n * c), 2 * c)
