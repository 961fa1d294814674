"""What `sst-edge space show|sample|check` report: a space's labels, size and cost range, or one subnet.
Cost figures are FLOPs (multiply-adds) from fvcore and from NNI's expression, so this lives above space/."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.table import Table

from ..space.config import SpaceConfig, heads_label, load_space, op_label, structure_label
from ..space.restriction import load_restriction, restricted_choices, space_size
from ..space.shift import shift_pattern
from ..space.subnet import load_subnet, make_subnet
from ..space.supernet import random_sample
from ..tables import rich_lines
from .flops import extreme_sample, predicted_cost, subnet_cost


@dataclass
class SpaceSummary:
    """A space (restricted or not): its labels, size, and smallest, largest and random subnets' cost."""

    config: SpaceConfig
    choices: dict[str, list]
    architectures: int
    restricted: bool
    subnets: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"space": self.config.name, "hash": self.config.hash, "source": str(self.config.source),
                "frames": self.config.frames, "size": self.config.size, "choices": self.choices,
                "architectures": self.architectures, "restricted": self.restricted,
                "subnets": {k: dict(s) for k, s in self.subnets.items()}}

    def lines(self) -> list[str]:
        c = self.config
        out = [f"{c.name}  hash {c.hash}  input [B, {c.frames}, 3, {c.size}, {c.size}] -> "
               f"[B, {c.frames}, {c.out_channels}]  ({c.source})"]
        if c.description:
            out.append(c.description)
        if "tps" in c.all_ops():
            out.append(f"tps offsets at {c.frames} frames (rows h mod P, columns w mod P): "
                       f"{[list(r) for r in shift_pattern(c.frames)]}")
        for st in c.structured_stages():
            sl = structure_label(st)
            out.append(f"stage {st} structure label {sl}: {','.join(self.choices[sl])} "
                       "(big_little: bLVNet's odd frames big at half resolution, even frames little)")
        labels = Table(title="choice blocks")
        for col in ("stage", "layer", "op label", "ops", "heads label", "heads"):
            labels.add_column(col)
        for s, l in c.layers():
            ol, hl = op_label(s, l), heads_label(s, l)
            labels.add_row(str(s), str(l), ol, ",".join(self.choices[ol]), hl,
                           ",".join(map(str, self.choices[hl])))
        n = self.architectures
        size = (f"{len(self.choices)} labels, {n:,} architectures ({n:.3g})"
                + ("  [restricted]" if self.restricted else ""))
        all_ops = c.all_ops()
        table = Table(title=f"subnets at {c.frames}x{c.size}x{c.size} (FLOPs = multiply-adds)")
        for col in (
            "subnet",
            "GFLOPs (fvcore)",
            "GFLOPs (NNI expr.)",
            "params (M)",
            f"ops {'/'.join(all_ops)}",
            *(["structures"] if c.structured_stages() else []),
        ):
            table.add_column(col, justify="right")
        for name, f in self.subnets.items():
            ops = [v for k, v in f["sample"].items() if k.endswith("_op")]
            bl = ([",".join("bl" if f["sample"][structure_label(st)] == "big_little" else "plain"
                            for st in c.structured_stages())] if c.structured_stages() else [])
            table.add_row(name, f"{f['gflops']:.4g}", f"{f['gflops_expr']:.4g}", f"{f['mparams']:.4g}",
                          "/".join(str(ops.count(op)) for op in all_ops), *bl)
        lo, hi = self.subnets["smallest"], self.subnets["largest"]
        return (
            out
            + rich_lines(labels, size, table)
            + [
                f"range: {lo['gflops']:.4g} .. {hi['gflops']:.4g} GFLOPs, "
                f"{lo['mparams']:.4g} .. {hi['mparams']:.4g} M params"
            ]
        )


def describe_space(space: str | Path | SpaceConfig, restriction_file: str | Path | None = None,
                   samples: int = 3, seed: int = 0) -> SpaceSummary:
    """The summary of a space, restricted by a restriction file if one is given."""
    config = space if isinstance(space, SpaceConfig) else load_space(space)
    restriction = load_restriction(restriction_file, config).choices if restriction_file else None
    rng = random.Random(seed)
    rows = [("smallest", extreme_sample(config, restriction)), ("largest", extreme_sample(config, restriction,
                                                                                          largest=True))]
    rows += [(f"random {i + 1}", random_sample(config, rng, restriction)) for i in range(samples)]
    summary = SpaceSummary(config, restricted_choices(config, restriction), space_size(config, restriction),
                           restriction is not None)
    for name, sample in rows:
        ref, expr = subnet_cost(config, sample), predicted_cost(config, sample)
        summary.subnets[name] = {"gflops": ref.gflops, "gflops_expr": expr.gflops, "mparams": ref.mparams,
                                 "sample": sample}
    return summary


@dataclass
class SubnetReport:
    """One subnet document: where it is, its space and its cost (NNI's expression)."""

    path: Path
    space: str
    space_hash: str
    sample: dict[str, Any]
    gflops: float
    mparams: float
    written: bool  # True: `space sample` wrote it; False: `space check` validated it

    def to_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "space": self.space, "space_hash": self.space_hash,
                "sample": self.sample, "gflops": self.gflops, "mparams": self.mparams, "valid": True}

    def lines(self) -> list[str]:
        if self.written:
            return [
                f"wrote {self.path}: subnet of '{self.space}', {self.gflops:.3f} GFLOPs, "
                f"{self.mparams:.3f} M params"
            ]
        return [
            f"{self.path}: valid subnet of '{self.space}' ({self.space_hash}): {self.gflops:.3f} GFLOPs, "
            f"{self.mparams:.3f} M params"
        ]


def sample_subnet(space: str | Path, seed: int, out: str | Path,
                  restriction_file: str | Path | None = None) -> SubnetReport:
    """Draw one subnet uniformly from the (restricted) space and write it as a subnet document."""
    config = load_space(space)
    restriction = load_restriction(restriction_file, config).choices if restriction_file else None
    sample = random_sample(config, random.Random(seed), restriction)
    cost = predicted_cost(config, sample)
    sub = make_subnet(config, sample, {"gflops": cost.gflops, "mparams": cost.mparams, "seed": seed},
                      restriction)
    return SubnetReport(sub.save(out), config.name, config.hash, sample, cost.gflops, cost.mparams, True)


def check_subnet(path: str | Path, space: str | Path | None = None) -> SubnetReport:
    """Validate a subnet document (raises with every problem) and report its cost."""
    sub, config = load_subnet(path, space)
    cost = predicted_cost(config, sub.sample)
    return SubnetReport(Path(path), config.name, config.hash, dict(sub.sample), cost.gflops, cost.mparams,
                        False)
