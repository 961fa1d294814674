"""Temporal shifts for `tps` (Temporal Patch Shift, Xiang et al., ECCV 2022), as exportable index gathers.

Patch shift: before q/k/v of a spatial attention block the token at (h, w) of frame t takes its value from
frame (t + s) mod T, with s set by (h mod P, w mod P); after attention the output is shifted back (after
the output projection, which acts per token, so the result is the same as shifting back before it). A 3x3
neighbourhood then sees 9 frames. Both shifts are one precomputed index over the T*N tokens of a clip, so
they export as a single ONNX Gather each (the reference's in-place strided rolls export as ScatterND).

Channel shift (the blocks in between, as the paper alternates them): TSM's 1/8 of the channels from t-1
and 1/8 from t+1, zero at the clip's ends, no shift back. Exports as Pad + Slice + Concat.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# The paper's "pattern C" (rows: h mod 3, columns: w mod 3): nine distinct offsets, from 9 frames up.
PATTERN_3X3 = ((-4, 1, 2), (-1, 0, 3), (-2, -3, 4))
# Ours, below 9 frames (at T = 8 the +-4 of pattern C land on one frame, at T = 4 the pattern folds onto
# itself): a 2x2 mosaic of offsets {0, +1, -1, +2}, four distinct frames from T = 4 up.
PATTERN_2X2 = ((0, 1), (-1, 2))


def shift_pattern(frames: int) -> tuple[tuple[int, ...], ...]:
    """The mosaic of temporal offsets used at `frames` frames: 3x3 pattern C from 9 frames, else 2x2."""
    return PATTERN_3X3 if frames >= 9 else PATTERN_2X2


def patch_shift_index(frames: int, grid: int, inverse: bool = False) -> torch.Tensor:
    """Index i over the flattened (t, h, w) tokens so that shifted[j] = tokens[i[j]] (int64, T*grid^2).

    Forward: token (t, h, w) reads frame (t + s(h, w)) mod T; inverse: frame (t - s(h, w)) mod T.
    """
    pattern = shift_pattern(frames)
    p = len(pattern)
    n = grid * grid
    sign = -1 if inverse else 1
    idx = [((t + sign * pattern[h % p][w % p]) % frames) * n + h * grid + w
           for t in range(frames) for h in range(grid) for w in range(grid)]
    return torch.tensor(idx, dtype=torch.long)


def gather_tokens(x: torch.Tensor, index: torch.Tensor, frames: int, tokens: int, dim: int) -> torch.Tensor:
    """x: [B, T, N, C] -> the same shape with the (t, n) tokens reordered by `index` (one Gather).

    The reshapes take T, N and C as the block's own ints, not traced sizes: with traced sizes the exported
    graph loses its static T, N and C, which TensorRT needs.
    """
    b = x.shape[0]
    return x.reshape(b, frames * tokens, dim).index_select(1, index).reshape(b, frames, tokens, dim)


def channel_fold(dim: int) -> int:
    """Channels shifted each way by TSM: 1/8 of them."""
    return dim // 8


def channel_shift(x: torch.Tensor, fold: int) -> torch.Tensor:
    """TSM: x [B, T, N, C]; channels [0, fold) from frame t-1, [fold, 2 fold) from t+1, zero-padded in time.

    `fold` is a Python int (channel_fold of the block's width): computed from a traced size it would
    export as int64 arithmetic, which TensorRT refuses.
    """
    if fold == 0:
        return x
    back = F.pad(x[..., :fold], (0, 0, 0, 0, 1, 0))[:, :-1]  # out[t] = x[t-1], out[0] = 0
    fwd = F.pad(x[..., fold:2 * fold], (0, 0, 0, 0, 0, 1))[:, 1:]  # out[t] = x[t+1], out[T-1] = 0
    return torch.cat([back, fwd, x[..., 2 * fold:]], dim=-1)
