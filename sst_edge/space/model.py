"""SSTSpace: the SST search space as an NNI ModelSpace, built from a SpaceConfig.

Each choice block is a LayerChoice over the ops the space file allows at that layer ({tab, sab} in the
paper's space; tps, tam, msq in sst_plus: ops.py) labelled `s{stage}_l{layer}_op`, whose candidates with
attention share one `s{stage}_l{layer}_heads` choice (the others ignore it). A restriction (what
training's shrinking left, restriction.py) narrows the values of any label; the supernet weights stay
loadable because widths only shrink (see supernet.py).

The structure (3 stages x 8 layers of {TAB, SAB} x {6, 12, 16} heads) is the paper's Table 1; the widths
come from the space YAML and are ours (search_spaces/sst_paper.yaml says how they were chosen).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .._nni import LayerChoice, ModelSpace, nni, recursive_freeze
from .blocks import FrameFeatures, PatchEmbed, SpatialDownsample
from .config import Choices, SpaceConfig, heads_label, op_label
from .ops import make_block


class SSTSpace(ModelSpace):
    """Input [B, T, 3, H, W] -> per-frame features [B, T, C_out]."""

    def __init__(self, config: SpaceConfig, restriction: Choices | None = None):
        super().__init__()
        self.config = config
        restriction = dict(restriction or {})
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
                ops = list(restriction.get(op_label(s, l), c.layer_ops(s, l)))
                heads = nni.choice(heads_label(s, l), list(restriction.get(heads_label(s, l), c.heads)))
                blocks.append(LayerChoice(
                    {op: make_block(op, st.channels, heads, st.head_dim, c.mlp_ratio, c.frames, grid, l)
                     for op in ops},
                    label=op_label(s, l),
                ))
            self.stages.append(nn.Sequential(*blocks))
            prev = st.channels
        self.head = FrameFeatures(prev)

    def freeze(self, sample: dict[str, Any]) -> nn.Module:
        """A plain model of one subnet; raises if the sample breaks a label or the budget."""
        self.validate(sample)
        model = recursive_freeze(self, sample, include_root=False)[0]
        # Blocks without attention (tam, msq) do not show their layer's heads value: keep the sample.
        model.frozen_sample = {k: sample[k] for k in self.config.choices() if k in sample}
        return model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x)
        for i, stage in enumerate(self.stages):
            if i > 0:
                x = self.downsamples[i - 1](x)
            x = stage(x)
        return self.head(x)
