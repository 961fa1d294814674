"""The parts of an SST subnet that a latency table times, built as the deployed modules are.

A subnet's latency is its fixed parts (patch embedding, downsample blocks, norm and pooling) plus one
choice block per layer. Blocks of one stage share an input shape, so one timing per (stage, op, heads)
serves every layer of that stage. An op without attention (tam, msq) is timed once per stage, key
"s{stage}.{op}", and the table files that timing under every heads value, so lookups stay (stage, op,
heads). tps is timed as layer 1 builds it (patch shift); its channel-shift layers cost the same FLOPs.
The modules come from `SSTSpace.freeze` of a one-layer-per-stage copy of the space (same blocks, same
shapes, built in a fraction of the time of the full space).

A stage that may be big_little (space/big_little.py) has more rows: its big branch's blocks at their own
shape [B, T/2, N/4, C], keys "s{stage}.big.{op}.h{heads}" (table op "big.{op}"), and once per stage the
rest of the structure (frame split, pooling, little branch, merge, fusion, copy to T frames), key
"s{stage}.little" (table op "little", filed under every heads value like a headless op).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import nn

from ..space.big_little import BigInput, BigLittleFrame, LittleMerge
from ..space.config import HEADLESS_OPS, SpaceConfig, heads_label, op_label, structure_label
from ..space.model import SSTSpace

BIG = "big."  # table op prefix of a big branch's block
LITTLE = "little"  # table op of a big_little stage's little branch, merge and fusion


@dataclass
class Part:
    key: str  # "embed", "downsample2", "head", "s{stage}.{op}.h{heads}" or "s{stage}.{op}" (no heads);
    # op may be "big.{op}" or "little" (big_little stages)
    module: nn.Module
    input_shape: tuple[int, ...]
    stage: int | None = None
    op: str | None = None
    heads: int | None = None


def block_key(stage: int, op: str, heads: int | None) -> str:
    """The part of one (stage, op, heads) block; ops without attention (and a big_little stage's little
    part) have one part per stage."""
    if op.removeprefix(BIG) in HEADLESS_OPS or op == LITTLE or heads is None:
        return f"s{stage}.{op}"
    return f"s{stage}.{op}.h{heads}"


def table_ops(config: SpaceConfig, stage: int) -> list[str]:
    """The table ops of a stage: its ops, then for a stage that may be big_little "big.{op}" and "little"."""
    ops = list(config.stage_ops(stage))
    if "big_little" in config.structures(stage):
        ops += [BIG + op for op in config.stage_ops(stage)] + [LITTLE]
    return ops


def stage_block_keys(config: SpaceConfig, stage: int) -> list[tuple[str, int, str]]:
    """(op, heads, part key) of every row of a stage's table entry, in table order."""
    return [(op, h, block_key(stage, op, h)) for op in table_ops(config, stage) for h in config.heads]


def _one_layer(config: SpaceConfig) -> SpaceConfig:
    """One layer per stage, which may use every op of its stage (structures kept)."""
    return dataclasses.replace(config, stages=tuple(
        dataclasses.replace(st, depth=1, ops=config.stage_ops(s), layer_ops=())
        for s, st in enumerate(config.stages, 1)))


def _input_shapes(model: nn.Module, batch_input: torch.Tensor) -> dict[str, tuple[int, ...]]:
    """Input shape of the embedding, each downsample, each stage's first block and the head."""
    shapes: dict[str, tuple[int, ...]] = {}
    hooks = []

    def grab(key: str):
        def hook(_m: nn.Module, args: tuple) -> None:
            shapes[key] = tuple(args[0].shape)

        return hook

    hooks.append(model.embed.register_forward_pre_hook(grab("embed")))
    for i, ds in enumerate(model.downsamples, 2):
        hooks.append(ds.register_forward_pre_hook(grab(f"downsample{i}")))
    for s, stage in enumerate(model.stages, 1):
        hooks.append(stage.register_forward_pre_hook(grab(f"stage{s}")))
        if hasattr(stage, "big"):  # big_little: its big branch's blocks see [B, T/2, N/4, C]
            hooks.append(stage.big.register_forward_pre_hook(grab(f"big{s}")))
    hooks.append(model.head.register_forward_pre_hook(grab("head")))
    try:
        with torch.no_grad():
            model.eval()(batch_input)
    finally:
        for h in hooks:
            h.remove()
    return shapes


def stage_input_shapes(config: SpaceConfig, batch: int = 1) -> dict[int, tuple[int, ...]]:
    """[B, T, N, C] entering each stage's choice blocks."""

    small = _one_layer(config)
    sample = {k: v[0] for k, v in small.choices().items()}
    sample.update({structure_label(s): "plain" for s in small.structured_stages()})
    shapes = _input_shapes(SSTSpace(small).freeze(sample), torch.zeros(config.input_shape(batch)))
    return {s: shapes[f"stage{s}"] for s in range(1, len(config.stages) + 1)}


def space_parts(config: SpaceConfig, batch: int = 1) -> list[Part]:
    """Every fixed part and every (stage, op, heads) block, with its input shape at `batch` clips (and,
    for stages that may be big_little, their big blocks and little part)."""

    small = _one_layer(config)
    space = SSTSpace(small)
    structured = small.structured_stages()
    parts: list[Part] = []
    blocks: list[Part] = []
    x = torch.zeros(config.input_shape(batch))
    for op in config.all_ops():
        for h in config.heads[:1] if op in HEADLESS_OPS else config.heads:
            sample = {}
            for s, l in small.layers():
                allowed = small.layer_ops(s, l)
                sample[op_label(s, l)] = op if op in allowed else allowed[0]
                sample[heads_label(s, l)] = h
            heads = None if op in HEADLESS_OPS else h
            for structure in ["plain", "big_little"] if structured else ["plain"]:
                sample.update({structure_label(s): structure for s in structured})
                sub = space.freeze(sample).eval()
                shapes = _input_shapes(sub, x)
                if not parts:
                    parts.append(Part("embed", sub.embed, shapes["embed"]))
                    for i, ds in enumerate(sub.downsamples, 2):
                        parts.append(Part(f"downsample{i}", ds, shapes[f"downsample{i}"]))
                    parts.append(Part("head", sub.head, shapes["head"]))
                for s, stage in enumerate(sub.stages, 1):
                    if op not in config.stage_ops(s):
                        continue
                    if structure == "plain":
                        blocks.append(Part(block_key(s, op, h), stage[0], shapes[f"stage{s}"], s, op, heads))
                    elif s in structured:
                        blocks.append(Part(block_key(s, BIG + op, h), stage.big[0], shapes[f"big{s}"], s,
                                           BIG + op, heads))
    for s in structured:
        if "big_little" in config.structures(s):
            blocks.append(Part(block_key(s, LITTLE, None), _little_part(config, s),
                               stage_input_shapes(config, batch)[s], s, LITTLE, None))
    order = {s: table_ops(config, s) for s in range(1, len(config.stages) + 1)}
    blocks.sort(key=lambda p: (p.stage, order[p.stage].index(p.op),
                               -1 if p.heads is None else config.heads.index(p.heads)))
    return parts + blocks


def _little_part(config: SpaceConfig, stage: int) -> nn.Module:
    """A big_little stage without its big blocks, as the space builds it (the stage's real depth)."""
    st, grid = config.stages[stage - 1], config.grids()[stage - 1]
    return BigLittleFrame(BigInput(st.channels, config.frames, grid),
                          LittleMerge(st.channels, st.depth, st.head_dim, config.mlp_ratio, config.frames,
                                      grid)).eval()
