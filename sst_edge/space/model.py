"""SSTSpace: the SST search space as an NNI ModelSpace, built from a SpaceConfig.

Each choice block is a LayerChoice {tab, sab} labelled `s{stage}_l{layer}_op`, whose two candidates share
one `s{stage}_l{layer}_heads` choice. A restriction (the shrunk space written by training) narrows the
values of any label; the supernet weights stay loadable because widths only shrink (see supernet.py).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from .._nni import LayerChoice, ModelSpace, nni
from .blocks import FrameFeatures, PatchEmbed, SpaceTimeBlock, SpatialDownsample
from .config import SpaceConfig, heads_label, op_label

Restriction = Mapping[str, Sequence]


class SSTSpace(ModelSpace):
    """Input [B, T, 3, H, W] -> per-frame features [B, T, C_out]."""

    def __init__(self, config: SpaceConfig, restrict: Restriction | None = None):
        super().__init__()
        self.config = config
        restrict = dict(restrict or {})
        c = config
        self.embed = PatchEmbed(c.patch_channels, c.frames, c.size)
        grid = self.embed.grid
        self.downsamples = nn.ModuleList()
        self.stages = nn.ModuleList()
        prev = c.patch_channels[-1]
        for s, st in enumerate(c.stages, 1):
            if s > 1:
                sdb = SpatialDownsample(prev, st.channels, grid, c.downsample_heads, st.head_dim, c.mlp_ratio)
                self.downsamples.append(sdb)
                grid = sdb.out_grid
            elif prev != st.channels:
                raise ValueError("the patch embedding's last width must equal stage 1's channels")
            blocks = []
            for l in range(1, st.depth + 1):
                ops = list(restrict.get(op_label(s, l), c.ops))
                heads = nni.choice(heads_label(s, l), list(restrict.get(heads_label(s, l), c.heads)))
                blocks.append(LayerChoice(
                    {op: SpaceTimeBlock(st.channels, heads, st.head_dim, c.mlp_ratio, op) for op in ops},
                    label=op_label(s, l),
                ))
            self.stages.append(nn.Sequential(*blocks))
            prev = st.channels
        self.head = FrameFeatures(prev)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x)
        for i, stage in enumerate(self.stages):
            if i > 0:
                x = self.downsamples[i - 1](x)
            x = stage(x)
        return self.head(x)
