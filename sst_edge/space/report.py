"""What `sst-edge space show|sample|check` print: a space's labels, size and cost range, or one subnet."""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from ..cost.flops import predicted_cost, subnet_cost
from .config import SpaceConfig, heads_label, load_space, op_label
from .subnet import Subnet, load_subnet, make_subnet
from .supernet import random_sample

Restriction = Mapping[str, Sequence]


def load_keep(path: str | Path | None, config: SpaceConfig) -> dict[str, list] | None:
    """The `keep` mapping of a shrunk-space JSON (written by training), validated against the space."""
    if path is None:
        return None
    from .restriction import load_restriction

    return load_restriction(path, config).keep


def _choices(config: SpaceConfig, restrict: Restriction | None) -> dict[str, list]:
    ch = config.choices()
    if restrict:
        ch.update({k: list(v) for k, v in restrict.items() if k in ch})
    return ch


def extreme_sample(config: SpaceConfig, restrict: Restriction | None = None, *,
                   largest: bool = False) -> dict[str, Any]:
    """The subnet of least (or most) FLOPs: cost is a sum over layers, so choose each layer on its own."""
    ch = _choices(config, restrict)
    sample = {k: v[0] for k, v in ch.items()}
    pick = max if largest else min
    for s, l in config.layers():
        ol, hl = op_label(s, l), heads_label(s, l)

        def flops_with(op: str, heads: int, ol: str = ol, hl: str = hl) -> float:
            return predicted_cost(config, {**sample, ol: op, hl: heads}).flops

        op, heads = pick(itertools.product(ch[ol], ch[hl]), key=lambda c: flops_with(*c))
        sample[ol], sample[hl] = op, heads
    return sample


def space_size(config: SpaceConfig, restrict: Restriction | None = None) -> int:
    return math.prod(len(v) for v in _choices(config, restrict).values())


def show_space(space: str | Path, restrict: str | Path | None = None, samples: int = 3, seed: int = 0,
               console: Console | None = None) -> dict[str, Any]:
    """Print the space summary; returns the figures shown (for tests and scripts)."""
    console = console or Console()
    config = load_space(space)
    keep = load_keep(restrict, config)
    ch = _choices(config, keep)
    console.print(f"[bold]{config.name}[/bold]  hash {config.hash}  input "
                  f"[B, {config.frames}, 3, {config.size}, {config.size}] -> [B, {config.frames}, "
                  f"{config.out_channels}]  ({config.source})")
    if config.description:
        console.print(config.description)
    if "tps" in config.all_ops():
        from .shift import shift_pattern

        console.print(f"tps offsets at {config.frames} frames (rows h mod P, columns w mod P): "
                      f"{[list(r) for r in shift_pattern(config.frames)]}")
    labels = Table(title="choice blocks", show_lines=False)
    labels.add_column("stage")
    labels.add_column("layer")
    labels.add_column("op label")
    labels.add_column("ops")
    labels.add_column("heads label")
    labels.add_column("heads")
    for s, l in config.layers():
        ol, hl = op_label(s, l), heads_label(s, l)
        labels.add_row(str(s), str(l), ol, ",".join(ch[ol]), hl, ",".join(map(str, ch[hl])))
    console.print(labels)
    n = space_size(config, keep)
    restricted = "  [restricted]" if keep else ""
    console.print(f"{len(ch)} labels, {n:,} architectures ({n:.3g}){restricted}")

    rng = random.Random(seed)
    rows = [("smallest", extreme_sample(config, keep)),
            ("largest", extreme_sample(config, keep, largest=True))]
    rows += [(f"random {i + 1}", random_sample(config, rng, keep)) for i in range(samples)]
    table = Table(title=f"subnets at {config.frames}x{config.size}x{config.size} (FLOPs = multiply-adds)")
    all_ops = config.all_ops()
    for col in ("subnet", "GFLOPs (fvcore)", "GFLOPs (NNI expr.)", "params (M)", f"ops {'/'.join(all_ops)}"):
        table.add_column(col, justify="right")
    figures: dict[str, Any] = {"architectures": n, "subnets": {}}
    for name, sample in rows:
        ref, expr = subnet_cost(config, sample), predicted_cost(config, sample)
        ops = [v for k, v in sample.items() if k.endswith("_op")]
        table.add_row(name, f"{ref.gflops:.4g}", f"{expr.gflops:.4g}", f"{ref.mparams:.4g}",
                      "/".join(str(ops.count(op)) for op in all_ops))
        figures["subnets"][name] = {"gflops": ref.gflops, "gflops_expr": expr.gflops, "mparams": ref.mparams}
    console.print(table)
    lo, hi = figures["subnets"]["smallest"], figures["subnets"]["largest"]
    console.print(f"range: {lo['gflops']:.4g} .. {hi['gflops']:.4g} GFLOPs, "
                  f"{lo['mparams']:.4g} .. {hi['mparams']:.4g} M params")
    return figures


def sample_subnet(space: str | Path, seed: int, out: str | Path, restrict: str | Path | None = None) -> Path:
    config = load_space(space)
    keep = load_keep(restrict, config)
    sample = random_sample(config, random.Random(seed), keep)
    cost = predicted_cost(config, sample)
    sub = make_subnet(config, sample, {"gflops": cost.gflops, "mparams": cost.mparams, "seed": seed}, keep)
    return sub.save(out)


def check_subnet(path: str | Path, space: str | Path | None = None, console: Console | None = None) -> Subnet:
    """Validate a subnet document (raises with every problem) and print its cost."""
    console = console or Console()
    sub, config = load_subnet(path, space)
    cost = predicted_cost(config, sub.sample)
    console.print(f"{path}: valid subnet of '{config.name}' ({config.hash}): "
                  f"{cost.gflops:.3f} GFLOPs, {cost.mparams:.3f} M params")
    return sub
