"""SSTSpace: the SST search space as an NNI ModelSpace, built from a SpaceConfig.

Each choice block is a LayerChoice over the ops the space file allows at that layer ({tab, sab} in the
paper's space; tps, tam, msq in sst_plus: ops.py) labelled `s{stage}_l{layer}_op`, whose candidates with
attention share one `s{stage}_l{layer}_heads` choice (the others ignore it). A restriction (what
training's shrinking left, restriction.py) narrows the values of any label; the supernet weights stay
loadable because widths only shrink (see supernet.py).

The structure (3 stages x 8 layers of {TAB, SAB} x {6, 12, 16} heads) is the paper's Table 1; the widths
come from the space YAML and are ours (search_spaces/sst_paper.yaml says how they were chosen).

A stage whose YAML lists `structures` is one more LayerChoice, labelled `s{stage}_structure`, over
{plain: the stage's choice blocks, big_little: big_little.BigLittleStage}. The big_little candidate holds
its own choice blocks (at its big branch's shape) under the SAME op and heads labels, so one sample
decides both paths (NNI lets several LayerChoices share a label; a test checks freeze and the one-shot
supernet agree). A stage without the key is built exactly as before (same modules, same weight names).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .._nni import LayerChoice, ModelSpace, nni, recursive_freeze
from .big_little import BigLittleStage
from .blocks import FrameFeatures, PatchEmbed, SpatialDownsample
from .config import Choices, SpaceConfig, heads_label, op_label, structure_label
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
            heads = [nni.choice(heads_label(s, l), list(restriction.get(heads_label(s, l), c.heads)))
                     for l in range(1, st.depth + 1)]
            if not st.structures:
                self.stages.append(self._choice_blocks(s, heads, restriction, c.frames, grid))
            else:
                paths: dict[str, nn.Module] = {}
                for structure in restriction.get(structure_label(s), st.structures):
                    if structure == "plain":
                        paths[structure] = self._choice_blocks(s, heads, restriction, c.frames, grid)
                    else:
                        big = self._choice_blocks(s, heads, restriction, c.frames // 2, grid // 2)
                        paths[structure] = BigLittleStage(st.channels, st.depth, st.head_dim, c.mlp_ratio,
                                                          c.frames, grid, big)
                self.stages.append(LayerChoice(paths, label=structure_label(s)))
            prev = st.channels
        self.head = FrameFeatures(prev)

    def _choice_blocks(self, s: int, heads: list, restriction: dict, frames: int, grid: int) -> nn.Sequential:
        """Stage `s`'s choice blocks for tokens of `frames` x `grid`^2 (the plain path, or a big branch)."""
        c, st = self.config, self.config.stages[s - 1]
        blocks = []
        for l in range(1, st.depth + 1):
            ops = list(restriction.get(op_label(s, l), c.layer_ops(s, l)))
            blocks.append(LayerChoice(
                {op: make_block(op, st.channels, heads[l - 1], st.head_dim, c.mlp_ratio, frames, grid, l)
                 for op in ops},
                label=op_label(s, l),
            ))
        return nn.Sequential(*blocks)

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
