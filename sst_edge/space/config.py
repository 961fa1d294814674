"""A search space as declared in YAML: parsed, validated and hashed.

The hash covers the parsed content (canonical JSON), not the bytes, so comments and formatting can change
without invalidating subnets, weights and tables made for the space.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..device.preprocess import Preprocess
from ..device.settings import default_resize
from ..errors import SSTEdgeError
from ..fileio import read_yaml
from ..resources import resolve

if TYPE_CHECKING:
    from ..device.preprocess import Preprocess

# A restriction: label -> the values still allowed (what training's shrinking leaves; `choices()` is the
# unrestricted one). The one type for it in every stage.
Choices = Mapping[str, Sequence[Any]]

OPS = ("tab", "sab", "tps", "tam", "msq")  # every op a space file may name (sst_edge/space/ops.py)
DEFAULT_OPS = ("tab", "sab")  # a space file without choices.ops: the paper's two blocks
HEADLESS_OPS = frozenset({"tam", "msq"})  # no attention: the layer's heads label does not change them
# A stage's macro structure (space/big_little.py): `plain` runs the stage's layers on every frame at full
# resolution; `big_little` is bLVNet's split (odd frames big at half resolution, even frames little).
STRUCTURES = ("plain", "big_little")


@dataclass(frozen=True)
class StageConfig:
    """One stage. `ops` overrides the space's ops for every layer of the stage, `layer_ops` for single
    layers ((layer, ops) pairs, 1-based): how a space offers an op (msq) at a few positions only.
    Both empty = the space's ops; empty fields stay out of the hash, so older spaces keep theirs."""

    channels: int
    depth: int
    head_dim: int
    ops: tuple[str, ...] = ()
    layer_ops: tuple[tuple[int, tuple[str, ...]], ...] = ()
    structures: tuple[str, ...] = ()  # () = plain only, no structure label (and no change to the hash)


@dataclass(frozen=True)
class SpaceConfig:
    """Everything that defines an SST search space (Table 1 of the paper, widths chosen by us)."""

    name: str
    frames: int
    size: int
    patch_channels: tuple[int, ...]
    stages: tuple[StageConfig, ...]
    ops: tuple[str, ...]
    heads: tuple[int, ...]
    mlp_ratio: float
    downsample_heads: int
    description: str = ""
    source: str = field(default="", compare=False)

    @property
    def out_channels(self) -> int:
        return self.stages[-1].channels

    def layers(self) -> list[tuple[int, int]]:
        """(stage, layer) of every choice block, both 1-based, in forward order."""
        return [(s, l) for s, st in enumerate(self.stages, 1) for l in range(1, st.depth + 1)]

    def layer_ops(self, stage: int, layer: int) -> tuple[str, ...]:
        """The ops layer `layer` (1-based) of stage `stage` may use."""
        st = self.stages[stage - 1]
        return dict(st.layer_ops).get(layer, st.ops or self.ops)

    def stage_ops(self, stage: int) -> tuple[str, ...]:
        """Every op some layer of `stage` may use, in the order of OPS (a latency table's rows)."""
        used = {op for l in range(1, self.stages[stage - 1].depth + 1) for op in self.layer_ops(stage, l)}
        return tuple(op for op in OPS if op in used)

    def all_ops(self) -> tuple[str, ...]:
        """Every op of the space, in the order of OPS."""
        used = {op for s in range(1, len(self.stages) + 1) for op in self.stage_ops(s)}
        return tuple(op for op in OPS if op in used)

    def structures(self, stage: int) -> tuple[str, ...]:
        """The structures stage `stage` may take; () when it has no structure label (plain only)."""
        return self.stages[stage - 1].structures

    def structured_stages(self) -> list[int]:
        """Stages with a structure label, in order."""
        return [s for s in range(1, len(self.stages) + 1) if self.structures(s)]

    def labels(self) -> list[str]:
        return list(self.choices())

    def choices(self) -> dict[str, list]:
        """{label: allowed values} of the full (unrestricted) space, in forward order (a stage's structure
        label before its layers' labels)."""
        out: dict[str, list] = {}
        for s, l in self.layers():
            if l == 1 and self.structures(s):
                out[structure_label(s)] = list(self.structures(s))
            out[op_label(s, l)] = list(self.layer_ops(s, l))
            out[heads_label(s, l)] = list(self.heads)
        return out

    def grids(self) -> list[int]:
        """The token grid side of each stage (H/16, then halved by each downsample block)."""
        return stage_grids(self.size, len(self.stages))

    def canonical(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("source")
        d.pop("description")
        for st in d["stages"]:
            for key in ("ops", "layer_ops", "structures"):
                if not st[key]:
                    del st[key]  # absent = the space's ops: keeps the hash of spaces that predate them
        return d

    @property
    def hash(self) -> str:
        blob = json.dumps(self.canonical(), sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def eval_preprocess(self, resize: int | None = None) -> Preprocess:
        """How evaluation, search, export and the device prepare clips for this space: T segment centres,
        shorter side `resize` (default 8/7 of the crop), centre crop to the input size."""
        return Preprocess(frames=self.frames, size=self.size,
                          resize=resize if resize is not None else default_resize(self.size))

    def input_shape(self, batch: int = 1) -> tuple[int, int, int, int, int]:
        return (batch, self.frames, 3, self.size, self.size)


def op_label(stage: int, layer: int) -> str:
    return f"s{stage}_l{layer}_op"


def heads_label(stage: int, layer: int) -> str:
    return f"s{stage}_l{layer}_heads"


def structure_label(stage: int) -> str:
    """The label of a stage's macro structure (plain | big_little)."""
    return f"s{stage}_structure"


def stage_grids(size: int, stages: int) -> list[int]:
    """Token grid side per stage: 4 stride-2 convolutions, then one per downsample block (3x3, pad 1)."""
    g = size
    for _ in range(4):
        g = (g - 1) // 2 + 1
    out = []
    for _ in range(stages):
        out.append(g)
        g = (g - 1) // 2 + 1
    return out


def _structures(value: Any, where: str, problems: list[str]) -> tuple[str, ...]:
    got = tuple(value) if isinstance(value, list) else ()
    if not got or any(v not in STRUCTURES for v in got) or len(set(got)) != len(got):
        problems.append(f"{where}: expected a non-empty subset of {list(STRUCTURES)}, got {value!r}")
    return got


def big_little_problems(frames: int, grid: int, ops: Sequence[str], where: str) -> list[str]:
    """Why a stage of `grid` x `grid` tokens at `frames` frames cannot be big_little (empty: it can).

    The frame split pairs frames (T even); the big branch pools 2x2 tokens by a reshape (grid even, >= 2);
    msq on the big branch correlates adjacent frames of the T/2 it sees (T/2 >= 2)."""
    out = []
    if frames % 2:
        out.append(f"{where}: big_little needs an even number of frames (pairs of frames), "
                   f"the input has {frames}")
    if grid < 2 or grid % 2:
        out.append(f"{where}: big_little needs an even token grid >= 2 (the big branch pools 2x2 tokens), "
                   f"this stage has {grid}x{grid}")
    if "msq" in ops and frames // 2 < 2:
        out.append(f"{where}: msq on the big branch needs at least 2 of its frames (T/2), got {frames // 2}")
    return out


def _need(d: dict, key: str, kind: type | tuple, where: str, problems: list[str]) -> Any:
    if key not in d:
        problems.append(f"{where}: missing '{key}'")
        return None
    v = d[key]
    if isinstance(v, bool) or not isinstance(v, kind):
        problems.append(f"{where}.{key}: expected {getattr(kind, '__name__', kind)}, got {v!r}")
        return None
    return v


def _ops(value: Any, where: str, problems: list[str]) -> tuple[str, ...]:
    ops = tuple(value) if isinstance(value, list) else ()
    if not ops or any(o not in OPS for o in ops) or len(set(ops)) != len(ops):
        problems.append(f"{where}: expected a non-empty subset of {list(OPS)}, got {value!r}")
    return ops


def _layer_ops(value: Any, depth: int | None, where: str,
               problems: list[str]) -> tuple[tuple[int, tuple[str, ...]], ...]:
    """{layer: [ops]} -> sorted ((layer, ops), ...), layers 1..depth."""
    if not isinstance(value, dict):
        problems.append(f"{where}: expected a mapping {{layer: [ops]}}, got {value!r}")
        return ()
    out = []
    for layer, ops in value.items():
        if isinstance(layer, bool) or not isinstance(layer, int) or not 1 <= layer <= (depth or 0):
            problems.append(f"{where}: layer {layer!r} is not in 1..{depth}")
            continue
        out.append((layer, _ops(ops, f"{where}.{layer}", problems)))
    return tuple(sorted(out))


# The keys a space YAML may hold, per mapping: a typo (`mlp_ration`) is an error, never a silent default.
_KEYS = {"space": {"name", "description", "input", "patch_embed", "head_dim", "mlp_ratio", "choices",
                   "downsample", "stages"},
         "input": {"frames", "size"}, "patch_embed": {"channels"}, "choices": {"ops", "heads"},
         "downsample": {"heads"},
         "stage": {"channels", "depth", "head_dim", "ops", "layer_ops", "structures"}}


def _unknown_keys(d: Any, kind: str, where: str, problems: list[str]) -> None:
    if isinstance(d, dict):
        known = ", ".join(sorted(_KEYS[kind]))
        problems += [f"{where + ': ' if where else ''}unknown key {k!r} (known: {known})"
                     for k in sorted(map(str, set(d) - _KEYS[kind]))]


def parse_space(doc: Any, source: str = "<memory>") -> SpaceConfig:
    """Validate a parsed YAML document and build a SpaceConfig, listing every problem at once."""
    problems: list[str] = []
    if not isinstance(doc, dict):
        raise SSTEdgeError("a space YAML must be a mapping", source)
    _unknown_keys(doc, "space", "", problems)
    for key in ("input", "patch_embed", "choices", "downsample"):
        _unknown_keys(doc.get(key), key, key, problems)
    name = _need(doc, "name", str, "space", problems)
    inp = _need(doc, "input", dict, "space", problems) or {}
    frames = _need(inp, "frames", int, "input", problems) if inp else None
    size = _need(inp, "size", int, "input", problems) if inp else None
    pe = _need(doc, "patch_embed", dict, "space", problems) or {}
    pch = _need(pe, "channels", list, "patch_embed", problems) if pe else None
    if pch is not None and (len(pch) != 4 or not all(isinstance(c, int) and c > 0 for c in pch)):
        problems.append("patch_embed.channels: expected 4 positive integers (4 stride-2 convolutions)")
    head_dim = doc.get("head_dim", 32)
    mlp_ratio = doc.get("mlp_ratio", 4)
    choices = _need(doc, "choices", dict, "space", problems) or {}
    ops = _ops(choices.get("ops", DEFAULT_OPS), "choices.ops", problems)
    heads = tuple(choices.get("heads", ()))
    if not heads or not all(isinstance(h, int) and h > 0 for h in heads):
        problems.append(f"choices.heads: expected positive integers, got {list(heads)}")
    ds = doc.get("downsample", {"heads": 12})
    stages_raw = _need(doc, "stages", list, "space", problems) or []
    stages = []
    for i, st in enumerate(stages_raw, 1):
        if not isinstance(st, dict):
            problems.append(f"stages[{i}]: expected a mapping")
            continue
        _unknown_keys(st, "stage", f"stages[{i}]", problems)
        ch = _need(st, "channels", int, f"stages[{i}]", problems)
        depth = _need(st, "depth", int, f"stages[{i}]", problems)
        hd = st.get("head_dim", head_dim)
        st_ops = _ops(st["ops"], f"stages[{i}].ops", problems) if "ops" in st else ()
        layer_ops = _layer_ops(st.get("layer_ops", {}), depth, f"stages[{i}].layer_ops", problems)
        structures = (_structures(st["structures"], f"stages[{i}].structures", problems)
                      if "structures" in st else ())
        if structures == ("plain",):
            structures = ()  # plain only is no choice: no label, the hash of the space without the key
        if ch is not None and depth is not None:
            stages.append(StageConfig(channels=ch, depth=depth, head_dim=int(hd), ops=st_ops,
                                      layer_ops=layer_ops, structures=structures))
    if stages_raw and len(stages_raw) < 1:
        problems.append("stages: at least one stage")
    if size is not None and size % 16:
        problems.append(f"input.size: must be a multiple of 16 (patch embedding to H/16), got {size}")
    if isinstance(frames, int) and isinstance(size, int) and size > 0 and not size % 16:
        for i, (st, grid) in enumerate(zip(stages, stage_grids(size, len(stages)), strict=True), 1):
            if "big_little" in st.structures:
                used = set(st.ops or ops) | {o for _, lo in st.layer_ops for o in lo}
                problems += big_little_problems(frames, grid, sorted(used), f"stages[{i}].structures")
    if problems:
        raise SSTEdgeError("invalid search space", source, problems)
    return SpaceConfig(
        name=name, frames=frames, size=size, patch_channels=tuple(pch), stages=tuple(stages), ops=ops,
        heads=heads, mlp_ratio=float(mlp_ratio), downsample_heads=int(ds.get("heads", 12)),
        description=str(doc.get("description", "")).strip(), source=source,
    )


def load_space(name_or_path: str | Path) -> SpaceConfig:
    """Load a space by name (search_spaces/NAME.yaml) or by path."""
    path = resolve("space", name_or_path)
    doc = read_yaml(path, "space YAML")
    return parse_space(doc, str(path))
