"""FLOPs and params: fvcore on a frozen subnet (the reference), and NNI's symbolic expression of a space.

Both count multiply-adds (one fused multiply-add = one FLOP), the convention of fvcore, thop and the
papers that report "FLOPs" for video transformers. fvcore skips `aten::scaled_dot_product_attention`
(a quarter of a video transformer's work), so we register a handle for it.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any

import torch
from fvcore.nn import FlopCountAnalysis
from fvcore.nn.jit_handles import get_shape
from torch import nn

from .._nni import FlopsParamsProfiler
from ..space.config import Choices, SpaceConfig, heads_label, op_label, structure_label
from ..space.model import SSTSpace
from ..space.restriction import restricted_choices


@dataclass(frozen=True)
class Cost:
    flops: float  # multiply-adds per clip
    params: int

    @property
    def gflops(self) -> float:
        return self.flops / 1e9

    @property
    def mparams(self) -> float:
        return self.params / 1e6


def _sdpa_flop_jit(inputs: list[Any], outputs: list[Any]) -> int:
    """QK^T and AV of scaled-dot-product attention: B*H*L*S*(D + Dv) multiply-adds."""

    q, k, v = (get_shape(i) for i in inputs[:3])
    *batch, length, d = q
    s, dv = k[-2], v[-1]
    n = 1
    for b in batch:
        n *= b
    return n * length * s * (d + dv)


def fvcore_cost(model: nn.Module, input_shape: tuple[int, ...]) -> Cost:
    """Per-clip FLOPs (multiply-adds) and params of a plain (frozen) model, traced by fvcore."""

    was_training = model.training
    model.eval()
    x = torch.zeros(input_shape)
    try:
        analysis = FlopCountAnalysis(model, x)
        analysis.set_op_handle("aten::scaled_dot_product_attention", _sdpa_flop_jit)
        analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
        logging.getLogger("fvcore.nn.jit_analysis").setLevel(logging.ERROR)
        with torch.no_grad():
            flops = analysis.total()
    finally:
        model.train(was_training)
    params = sum(p.numel() for p in model.parameters())
    return Cost(flops=flops / input_shape[0], params=params)


def subnet_cost(config: SpaceConfig, sample: Mapping[str, Any]) -> Cost:
    """fvcore's count of one subnet at the space's input size."""

    sub = SSTSpace(config).freeze(dict(sample))
    return fvcore_cost(sub, config.input_shape(1))


@cache
def _expression(config: SpaceConfig) -> Any:

    space = SSTSpace(config)
    return FlopsParamsProfiler(space, torch.zeros(config.input_shape(1))).flops_result


def cost_expression(config: SpaceConfig) -> Any:
    """NNI's symbolic FlopsResult (flops, params) over the labels of the full space; cached per space."""
    return _expression(config)


def predicted_cost(config: SpaceConfig, sample: Mapping[str, Any]) -> Cost:
    """The NNI expression evaluated at a sample: fast (no model is built), within 2% of fvcore."""
    r = _expression(config).freeze(dict(sample))
    return Cost(flops=float(r.flops), params=int(r.params))


def extreme_sample(config: SpaceConfig, restriction: Choices | None = None, *,
                   largest: bool = False) -> dict[str, Any]:
    """The subnet of least (or most) FLOPs. Given the stages' structures, cost is a sum over layers, so
    choose each layer on its own; each stage's structure is tried with its layers chosen that way (a
    stage's cost depends only on its own structure and layers)."""
    ch = restricted_choices(config, restriction)
    sample = {k: v[0] for k, v in ch.items()}
    pick = max if largest else min

    def choose_layers(stage: int) -> None:
        for s, l in config.layers():
            if s != stage:
                continue
            ol, hl = op_label(s, l), heads_label(s, l)

            def flops_with(op: str, heads: int, ol: str = ol, hl: str = hl) -> float:
                return predicted_cost(config, {**sample, ol: op, hl: heads}).flops

            op, heads = pick(itertools.product(ch[ol], ch[hl]), key=lambda c: flops_with(*c))
            sample[ol], sample[hl] = op, heads

    for stage in range(1, len(config.stages) + 1):
        if not config.structures(stage):
            choose_layers(stage)
            continue
        sl = structure_label(stage)
        best: tuple[float, dict[str, Any]] | None = None
        for structure in ch[sl]:
            sample[sl] = structure
            choose_layers(stage)
            flops = predicted_cost(config, sample).flops
            if best is None or (flops > best[0] if largest else flops < best[0]):
                best = (flops, dict(sample))
        sample.update(best[1])  # type: ignore[index]
    return sample
