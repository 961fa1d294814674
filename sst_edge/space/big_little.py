"""big_little: bLVNet's big-little split as a per-stage structure over tokens [B, T, N, C].

bLVNet-TAM (Fan et al., NeurIPS 2019; IBM/bLVNet-TAM `bLModule`) runs odd frames through a "big" branch
(full width, half resolution) and even frames through a "little" branch (width C/alpha, full
resolution, max(1, depth // beta - 1) blocks), adds the big branch upsampled (nearest) to the little one,
applies one fusion block, and copies the result to both frames of each pair. alpha = 2, beta = 4 are the
released models' values. From bLVNet: the odd/even split, the branches' widths, resolutions and depth
rule, nearest upsampling, add then fuse, the copy to both frames.

Ours (a transformer reading of it: bLVNet as a macro choice per stage):
- The big branch runs the stage's SEARCHED layers: its LayerChoices carry the plain path's op and heads
  labels, so one sample decides both; they are built for the big branch's own shape (T/2 frames, grid/2)
  with their OWN weights (tps and msq bake frames and grid into index buffers, and one module cannot sit
  at two places of NNI's module tree).
- Pooling 2x2 tokens is reshape + mean, upsampling is reshape + a copy, the frame split is reshape +
  slice, the copy to two frames is unsqueeze + a copy + reshape, all with the block's own sizes: exported
  as Reshape/ReduceMean/Slice/Concat, never Gather, Resize or ScatterND. (The copies are Concats, not
  `expand`: with a dynamic batch `expand` exports as int64 ConstantOfShape * -1 + Where.)
- The little branch: Linear C -> C/alpha, sab SpaceTimeBlocks at C/alpha with a fixed head count
  (C/alpha // head_dim, at least 1), Linear back to C. The fusion block: `tam` (TemporalAggregation at
  width C over the T/2 merged frames), our stand-in for bLVNet's fusion Bottleneck; it also restores the
  temporal mixing that bLVNet gets from its TAM at each stage's input. No ReLU after the add (the token
  stream is a residual stream, not post-activation feature maps).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .._nni import FlopsResult, MutableShape, profiler_leaf_module
from .blocks import SpaceTimeBlock
from .ops import TemporalAggregation

ALPHA = 2  # little branch width divisor (bLVNet's alpha)
BETA = 4  # little branch depth divisor (bLVNet's beta)


def little_depth(depth: int) -> int:
    """bLVNet's little branch depth: max(1, blocks // beta - 1)."""
    return max(1, depth // BETA - 1)


def little_heads(dim: int, head_dim: int) -> int:
    """Fixed head count of the little branch's sab blocks: attention width about C/alpha."""
    return max(1, (dim // ALPHA) // head_dim)


def frame_pair(x: torch.Tensor, which: int, frames: int, tokens: int, dim: int) -> torch.Tensor:
    """Frames `which`, which + 2, ... of x [B, T, N, C] (0: even, 1: odd) -> [B, T/2, N, C], by reshape
    [B, T/2, 2, N, C] and a slice (ONNX Slice, not Gather)."""
    b = x.shape[0]
    pairs = x.reshape(b, frames // 2, 2, tokens, dim)
    return pairs[:, :, which:which + 1].reshape(b, frames // 2, tokens, dim)


def pool2x2(x: torch.Tensor, frames: int, grid: int, dim: int) -> torch.Tensor:
    """Mean over 2x2 tokens: [B, T', g*g, C] -> [B, T', (g/2)^2, C] (reshape + mean). T', g and C are the
    block's ints, never traced sizes (those export as int64 arithmetic and dynamic dims, which TensorRT
    refuses)."""
    b, t = x.shape[0], frames
    h = grid // 2
    return x.reshape(b, t, h, 2, h, 2, dim).mean(dim=(3, 5)).reshape(b, t, h * h, dim)


def _twice(x: torch.Tensor, dim: int) -> torch.Tensor:
    """x with its size-1 axis `dim` doubled by copy. A Concat of x with itself: `expand` with a dynamic
    batch exports as ConstantOfShape * -1 + Where (int64 arithmetic, which TensorRT refuses)."""
    return torch.cat([x, x], dim=dim)


def upsample2x2(x: torch.Tensor, frames: int, grid: int, dim: int) -> torch.Tensor:
    """Nearest upsampling: [B, T', (g/2)^2, C] -> [B, T', g*g, C] (reshape + copy, no Resize)."""
    b, t = x.shape[0], frames
    h = grid // 2
    y = _twice(_twice(x.reshape(b, t, h, 1, h, 1, dim), 3), 5)
    return y.reshape(b, t, grid * grid, dim)


def repeat_frames(x: torch.Tensor, frames: int, tokens: int, dim: int) -> torch.Tensor:
    """Each of T/2 frames copied to two: [B, T/2, N, C] -> [B, T, N, C] (no index assignment)."""
    return _twice(x.unsqueeze(2), 2).reshape(x.shape[0], frames, tokens, dim)


@profiler_leaf_module
class BigInput(nn.Module):
    """The big branch's input: odd frames (1, 3, ...), 2x2 token pooling. No parameters, no FLOPs
    (fvcore counts no mean)."""

    def __init__(self, dim: int, frames: int, grid: int):
        super().__init__()
        self.dim, self.frames, self.grid = dim, frames, grid

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        odd = frame_pair(x, 1, self.frames, self.grid * self.grid, self.dim)
        return pool2x2(odd, self.frames // 2, self.grid, self.dim)

    def _shape_forward(self, x: Any) -> Any:
        s = x.real_shape
        return MutableShape(s[0], self.frames // 2, (self.grid // 2) ** 2, self.dim)

    def _count_flops(self, inputs: tuple, outputs: Any) -> FlopsResult:
        return FlopsResult(0, 0)


@profiler_leaf_module
class LittleMerge(nn.Module):
    """Everything of a big_little stage but the big branch's blocks: the little branch on even frames,
    the merge with the upsampled big branch, the fusion block and the copy to T frames."""

    def __init__(self, dim: int, depth: int, head_dim: int, mlp_ratio: float, frames: int, grid: int):
        super().__init__()
        self.dim, self.frames, self.grid = dim, frames, grid
        width = dim // ALPHA
        self.down = nn.Linear(dim, width)
        self.little = nn.Sequential(*[SpaceTimeBlock(width, little_heads(dim, head_dim), head_dim, mlp_ratio,
                                                     "sab") for _ in range(little_depth(depth))])
        self.up = nn.Linear(width, dim)
        self.fusion = TemporalAggregation(dim, mlp_ratio)
        for m in (self.down, self.up):
            nn.init.trunc_normal_(m.weight, std=0.02)
            nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor, big: torch.Tensor) -> torch.Tensor:
        n = self.grid * self.grid
        even = frame_pair(x, 0, self.frames, n, self.dim)
        little = self.up(self.little(self.down(even)))
        merged = upsample2x2(big, self.frames // 2, self.grid, self.dim) + little
        return repeat_frames(self.fusion(merged), self.frames, n, self.dim)

    def _shape_forward(self, x: Any, big: Any) -> Any:
        return x.real_shape

    def _count_flops(self, inputs: tuple, outputs: Any) -> FlopsResult:
        t, n, c, w = self.frames // 2, self.grid * self.grid, self.dim, self.down.out_features
        inner = (1, t, n, w)
        flops = t * n * c * w + t * n * w * c  # down, up
        params = (c * w + w) + (w * c + c)
        out = FlopsResult(flops, params)
        for block in self.little:
            out = out + block._count_flops((inner,), inner)
        full = (1, t, n, c)
        return out + self.fusion._count_flops((full,), full)


class BigLittleStage(nn.Module):
    """One big_little stage: merge(x, big(big_input(x))). `big` is a Sequential of the stage's choice
    blocks built at [T/2, (grid/2)^2] (LayerChoices in the space, plain blocks once frozen)."""

    def __init__(self, dim: int, depth: int, head_dim: int, mlp_ratio: float, frames: int, grid: int,
                 big: nn.Sequential):
        super().__init__()
        self.split = BigInput(dim, frames, grid)
        self.big = big
        self.merge = LittleMerge(dim, depth, head_dim, mlp_ratio, frames, grid)

    def frame(self) -> BigLittleFrame:
        """This stage without its big blocks (same modules)."""
        return BigLittleFrame(self.split, self.merge)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.merge(x, self.big(self.split(x)))


class BigLittleFrame(nn.Module):
    """A big_little stage without its big blocks (x -> merge(x, big_input(x))): what a latency table
    times once per stage, beside the big blocks timed per (op, heads) at their shape."""

    def __init__(self, split: BigInput, merge: LittleMerge):
        super().__init__()
        self.split, self.merge = split, merge

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.merge(x, self.split(x))
