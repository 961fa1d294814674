"""Latency lookup tables: per-clip latency of a subnet = fixed parts + the sum of its blocks (+ correction).

A table (latency_tables/NAME.json) holds, for one space x target x device, the median and spread of every
fixed part and every (stage, op, heads) block, timed on the target's runtime (see profile.py). Prediction
is available as a Python call (`predict_ms`) and as an NNI expression over the space's labels
(`expression`), so a search can put a latency budget in an `ExpressionConstraint`.

Plain sums under-estimate whole models (cache and memory effects between blocks), so validation against
measured subnets fits a correction (scale and offset) that `predict_ms` applies unless asked for `raw`.

A stage that may be big_little has the rows of both structures (parts.py): with `s{stage}_structure` =
big_little it costs its "little" row plus one "big.{op}" row per layer; plain, one "{op}" row per layer.
A table of a space without structure labels reads and predicts exactly as before.

A table measured for another space or target predicts the wrong numbers silently, so loading refuses one
unless the caller allows it (`allow_foreign=True`, `--allow-foreign-table`). A table is judged against
the space and target it is used for (the search's, by default the table's own target) and the device
that timed it (its fingerprint: backend, provider, precision, threads, a GPU for a GPU target); the
machine that reads it matters only when that machine re-times it (`retime=True`: `profile --table
--validate`). So a table profiled on a Jetson drives a search on an x86 host as it is.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._nni import Categorical, ExpressionProfiler, MutableExpression
from ..device.fingerprint import (
    device_fingerprint,
    device_mismatches,
    execution_provider,
    run_mismatches,
    run_precision,
)
from ..device.targets import Target, load_target
from ..device.timing import TIMING_SCHEMA, Timing
from ..errors import SSTEdgeError
from ..fileio import atomic_write_json, read_json
from ..resources import resolve
from ..schema import POS_INT, POS_NUMBER, TEXT, check, header_schema
from ..space.config import SpaceConfig, heads_label, load_space, op_label, structure_label
from .parts import BIG, LITTLE, stage_block_keys

FORMAT = "sst-edge/latency-table"
VERSION = 1
UNIT = "ms per clip (batch 1)"
FOREIGN_HINT = "pass --allow-foreign-table (allow_foreign=True) to use it anyway"
TABLE_SCHEMA = {
    "type": "object",
    "required": ["format", "version", "space", "space_hash", "target", "backend", "created", "fingerprint",
                 "timing", "fixed", "stages"],
    "properties": {
        **header_schema(FORMAT, VERSION),
        "space": {**TEXT, "maxLength": 200}, "space_hash": {**TEXT, "maxLength": 128},
        "target": {"type": "object", "required": ["name"], "properties": {"name": TEXT}},
        "backend": {"enum": ["onnxruntime", "openvino", "torch"]}, "created": TEXT,
        "fingerprint": {"type": "object"}, "timing": {"type": "object"},
        "fixed": {"type": "object", "minProperties": 1,
                  "additionalProperties": {**TIMING_SCHEMA, "properties": {
                      **TIMING_SCHEMA["properties"], "input_shape": {"type": "array", "items": POS_INT}}}},
        "stages": {"type": "array", "minItems": 1, "items": {
            "type": "object", "required": ["stage", "depth", "input_shape", "blocks"],
            "properties": {
                "stage": POS_INT, "depth": POS_INT, "input_shape": {"type": "array", "items": POS_INT},
                "blocks": {"type": "object", "minProperties": 1, "additionalProperties": {
                    "type": "object", "minProperties": 1, "propertyNames": {"pattern": "^[1-9][0-9]*$"},
                    "additionalProperties": TIMING_SCHEMA}}}}},
        "correction": {"anyOf": [{"type": "null"}, {
            "type": "object", "required": ["kind", "scale", "offset_ms", "fitted_on"],
            "properties": {"kind": {"enum": ["affine", "scale"]}, "scale": POS_NUMBER,
                           "offset_ms": {"type": "number"},
                           "fitted_on": {"type": "integer", "minimum": 0}}}]},
        "validation": {"anyOf": [{"type": "null"}, {"type": "object"}]}}}


@dataclass(frozen=True)
class Correction:
    """measured ~= scale * (fixed + sum of blocks) + offset_ms, fitted on measured subnets."""

    kind: str  # "affine" or "scale"
    scale: float
    offset_ms: float
    fitted_on: int

    def apply(self, raw_ms: float) -> float:
        return raw_ms * self.scale + self.offset_ms

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "scale": self.scale, "offset_ms": self.offset_ms,
                "fitted_on": self.fitted_on}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Correction:
        return cls(str(d["kind"]), float(d["scale"]), float(d["offset_ms"]), int(d["fitted_on"]))


@dataclass
class StageEntry:
    stage: int
    depth: int
    input_shape: list[int]
    blocks: dict[str, dict[int, Timing]]  # op -> heads -> timing


@dataclass
class LatencyTable:
    space: str
    space_hash: str
    target: dict[str, Any]  # {"name", "hash", "settings": Target.canonical()}
    backend: str
    created: str
    fingerprint: dict[str, Any]
    timing: dict[str, Any]  # how it was measured (policy, exporter settings, seed, duration)
    fixed: dict[str, tuple[list[int], Timing]]  # key -> (input shape, timing), forward order
    stages: list[StageEntry]
    correction: Correction | None = None
    validation: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # unknown keys, kept for the round trip
    path: Path | None = field(default=None, compare=False)
    foreign: list[str] = field(default_factory=list, compare=False)  # mismatches accepted on load

    def __post_init__(self) -> None:
        self._reindex()

    def _reindex(self) -> None:
        # Summation order is fixed here and in expression(), so both give bit-identical floats.
        self._fixed_ms = sum(t.median_ms for _, t in self.fixed.values())
        self._lookup = {(st.stage, op, h): t.median_ms
                        for st in self.stages for op, hs in st.blocks.items() for h, t in hs.items()}

    # -------------------------------------------------------------------------------------- queries
    @property
    def target_name(self) -> str:
        return str(self.target.get("name"))

    @property
    def fixed_ms(self) -> float:
        return self._fixed_ms

    def layers(self) -> list[tuple[int, int]]:
        return [(st.stage, l) for st in self.stages for l in range(1, st.depth + 1)]

    def block_ms(self, stage: int, op: str, heads: int) -> float:
        return self._lookup[(stage, op, int(heads))]

    def structured(self, stage: StageEntry) -> bool:
        """Whether this stage's entry has big_little rows (then its sample has a structure label)."""
        return LITTLE in stage.blocks

    def sample_problems(self, sample: Mapping[str, Any]) -> list[str]:
        problems = []
        for st in self.stages:
            prefix = ""
            if self.structured(st):
                sl = structure_label(st.stage)
                if sl not in sample:
                    problems.append(f"missing label '{sl}'")
                    continue
                if sample[sl] not in ("plain", "big_little"):
                    problems.append(f"no timing for {sl}={sample[sl]!r}")
                    continue
                prefix = BIG if sample[sl] == "big_little" else ""
            for l in range(1, st.depth + 1):
                ol, hl = op_label(st.stage, l), heads_label(st.stage, l)
                if ol not in sample or hl not in sample:
                    problems.append(f"missing label '{ol if ol not in sample else hl}'")
                elif not isinstance(sample[ol], str) or not _known(
                        self._lookup, (st.stage, prefix + sample[ol], sample[hl])):
                    problems.append(f"no timing for {ol}={sample[ol]!r}, {hl}={sample[hl]!r}")
        return problems

    def predict_ms(self, sample: Mapping[str, Any], raw: bool = False) -> float:
        """Predicted per-clip latency of a subnet; with the validation's correction unless `raw`."""
        total = self._fixed_ms
        try:
            for st in self.stages:
                s = st.stage
                if not self.structured(st):
                    for l in range(1, st.depth + 1):
                        total += self._lookup[(s, sample[f"s{s}_l{l}_op"], sample[f"s{s}_l{l}_heads"])]
                    continue
                big = sample[structure_label(s)] == "big_little"  # same sums as expression()
                prefix = BIG if big else ""
                part = self._lookup[(s, LITTLE, next(iter(st.blocks[LITTLE])))] if big else 0.0
                for l in range(1, st.depth + 1):
                    part += self._lookup[(s, prefix + sample[f"s{s}_l{l}_op"], sample[f"s{s}_l{l}_heads"])]
                total += part
        except (KeyError, TypeError):
            raise SSTEdgeError(f"cannot predict this sample with the table for '{self.space}'", self.path,
                               self.sample_problems(sample)) from None
        if raw or self.correction is None:
            return total
        return self.correction.apply(total)

    def expression(self, raw: bool = False, restriction: Mapping[str, Any] | None = None) -> Any:
        """An NNI expression over the space's labels that freezes to `predict_ms(sample, raw)`.

        Nested `MutableExpression.switch_case` (op, then heads) per layer, summed in forward order. A stage
        with big_little rows is a switch_case over its structure label of the two structures' sums (the
        same op and heads labels in both: one sample decides both).
        `restrict` narrows the values of labels, so the Categoricals equal those of a restricted space.
        """

        restriction = dict(restriction or {})
        total: Any = self._fixed_ms
        for st in self.stages:
            structures = [""]  # a stage without structure rows: its layers added to the total, as before
            if self.structured(st):
                structures = list(restriction.get(structure_label(st.stage), ["big_little", "plain"]))
            sums: dict[str, Any] = {}
            for structure in structures:
                prefix = BIG if structure == "big_little" else ""
                part: Any = total if not structure else (
                    self._lookup[(st.stage, LITTLE, next(iter(st.blocks[LITTLE])))] if prefix else 0.0)
                for l in range(1, st.depth + 1):
                    ol, hl = op_label(st.stage, l), heads_label(st.stage, l)
                    ops = list(restriction.get(ol, [op for op in st.blocks
                                                    if not op.startswith(BIG) and op != LITTLE]))
                    heads = list(restriction.get(hl, next(iter(st.blocks.values()))))
                    op_c = Categorical(ops, label=ol)
                    heads_c = Categorical(heads, label=hl)
                    try:
                        cases = {op: MutableExpression.switch_case(
                            heads_c, {h: self._lookup[(st.stage, prefix + op, h)] for h in heads})
                            for op in ops}
                    except KeyError as e:
                        raise SSTEdgeError(f"the table has no timing for {e.args[0]} ({ol}, {hl})",
                                           self.path) from None
                    part = part + MutableExpression.switch_case(op_c, cases)
                sums[structure] = part
            if self.structured(st):
                total = total + MutableExpression.switch_case(
                    Categorical(structures, label=structure_label(st.stage)), sums)
            else:
                total = sums[""]
        if raw or self.correction is None:
            return total
        return total * self.correction.scale + self.correction.offset_ms

    def profiler(self, raw: bool = False, restriction: Mapping[str, Any] | None = None) -> Any:
        """An NNI `ExpressionProfiler` (class `LatencyProfiler`) whose profile(sample) = predict_ms."""
        return LatencyProfiler(self, raw=raw, restriction=restriction)

    # ----------------------------------------------------------------------------------- (de)serialize
    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "format": FORMAT,
            "version": VERSION,
            "space": self.space,
            "space_hash": self.space_hash,
            "target": copy.deepcopy(self.target),
            "backend": self.backend,
            "unit": UNIT,
            "created": self.created,
            "fingerprint": copy.deepcopy(self.fingerprint),
            "timing": copy.deepcopy(self.timing),
            "fixed": {k: {"input_shape": list(shape), **t.to_dict()} for k, (shape, t) in self.fixed.items()},
            "stages": [{"stage": st.stage, "depth": st.depth, "input_shape": list(st.input_shape),
                        "blocks": {op: {str(h): t.to_dict() for h, t in hs.items()}
                                   for op, hs in st.blocks.items()}} for st in self.stages],
            "correction": self.correction.to_dict() if self.correction else None,
            "validation": copy.deepcopy(self.validation),
        }
        d.update(copy.deepcopy(self.extra))
        return d

    @classmethod
    def from_dict(cls, doc: Any, path: str | Path | None = None) -> LatencyTable:
        """Parse and validate a table document (by schema: types, finite positive timings), naming every
        problem. Whether it covers every block of a space is `check_table`'s question."""
        check(doc, TABLE_SCHEMA, "latency table", path)
        problems: list[str] = []
        kinds = {"space", "space_hash", "target", "backend", "created", "fingerprint", "timing", "fixed",
                 "stages"}

        def timing(where: str, d: Any) -> Timing | None:
            try:
                t = Timing.from_dict(d)
            except (KeyError, TypeError, ValueError):
                problems.append(f"{where}: expected median_ms, p10_ms, p90_ms and count")
                return None
            if not t.median_ms > 0:
                problems.append(f"{where}: median_ms must be positive, got {t.median_ms}")
            return t

        fixed: dict[str, tuple[list[int], Timing]] = {}
        for key, entry in doc["fixed"].items():
            t = timing(f"fixed.{key}", entry)
            if t is not None:
                fixed[key] = (list(entry.get("input_shape", [])), t)
        stages: list[StageEntry] = []
        for i, st in enumerate(doc["stages"]):
            if not isinstance(st, dict) or not isinstance(st.get("blocks"), dict):
                problems.append(f"stages[{i}]: expected stage, depth, input_shape and blocks")
                continue
            blocks: dict[str, dict[int, Timing]] = {}
            for op, hs in st["blocks"].items():
                if not isinstance(hs, dict):
                    problems.append(f"stages[{i}].blocks.{op}: expected {{heads: timing}}")
                    continue
                blocks[op] = {}
                for h, entry in hs.items():
                    t = timing(f"stages[{i}].blocks.{op}.{h}", entry)
                    if t is not None and str(h).isdigit():
                        blocks[op][int(h)] = t
                    elif t is not None:
                        problems.append(f"stages[{i}].blocks.{op}: heads key {h!r} is not an integer")
            try:
                stages.append(StageEntry(int(st["stage"]), int(st["depth"]), list(st["input_shape"]), blocks))
            except (KeyError, TypeError, ValueError):
                problems.append(f"stages[{i}]: expected stage, depth, input_shape and blocks")
        correction = None
        if doc.get("correction") is not None:
            try:
                correction = Correction.from_dict(doc["correction"])
            except (KeyError, TypeError, ValueError):
                problems.append("correction: expected kind, scale, offset_ms and fitted_on")
        if problems:
            raise SSTEdgeError("not a valid latency table", path, problems)
        known = {"format", "version", "unit", "correction", "validation", *kinds}
        return cls(space=doc["space"], space_hash=doc["space_hash"], target=doc["target"],
                   backend=doc["backend"], created=doc["created"], fingerprint=doc["fingerprint"],
                   timing=doc["timing"], fixed=fixed, stages=stages, correction=correction,
                   validation=doc.get("validation"), extra={k: v for k, v in doc.items() if k not in known},
                   path=Path(path) if path is not None else None)

    def save(self, path: str | Path | None = None) -> Path:
        """Write atomically (to `path`, else where it was loaded from), checked by the reader's schema."""
        path = Path(path) if path is not None else self.path
        if path is None:
            raise SSTEdgeError("this latency table has no path yet: give one to save()")
        self.path = atomic_write_json(path, check(self.to_dict(), TABLE_SCHEMA, "latency table", path))
        return self.path


def _known(lookup: Mapping, key: tuple) -> bool:
    """`key in lookup`, False for an unhashable value (a list where a choice belongs)."""
    try:
        return key in lookup
    except TypeError:
        return False


class LatencyProfiler(ExpressionProfiler):
    """An NNI ExpressionProfiler over a table: `profile(sample)` is the predicted latency in ms."""

    def __init__(self, table: LatencyTable, model_space: Any = None, raw: bool = False,
                 restriction: Mapping[str, Any] | None = None):
        self.table = table
        self.expression = table.expression(raw=raw, restriction=restriction)


# ------------------------------------------------------------------------------------- foreign tables
def target_record(target: Target) -> dict[str, Any]:
    return {"name": target.name, "hash": target.hash, "settings": target.canonical()}


def fixed_keys(config: SpaceConfig) -> list[str]:
    """The space's fixed parts in forward order: patch embedding, the downsamples between stages, head."""
    return ["embed", *[f"downsample{s}" for s in range(2, len(config.stages) + 1)], "head"]


def missing_entries(table: LatencyTable, config: SpaceConfig) -> list[str]:
    """The fixed parts, stages and (stage, op, heads) blocks of `config` that `table` has no timing for."""
    have = {st.stage: st for st in table.stages}
    out = [f"fixed part {k}" for k in fixed_keys(config) if k not in table.fixed]
    for s, st in enumerate(config.stages, 1):
        entry = have.get(s)
        if entry is None:
            out.append(f"stage {s}")
            continue
        if entry.depth != st.depth:
            out.append(f"stage {s}: depth {entry.depth}, the space has {st.depth}")
        out += [f"stage {s} block {op}/{h} heads" for op, h, _ in stage_block_keys(config, s)
                if h not in entry.blocks.get(op, {})]
    return out


def foreign_problems(table: LatencyTable, config: SpaceConfig | None = None, target: Target | None = None,
                     backend: str | None = None, here: Mapping[str, Any] | None = None) -> list[str]:
    """Why this table does not describe (config, target, backend); empty when it does.

    The device that timed it (its fingerprint) is compared with `here` (CPU model and count, the GPU
    when the table used one) only when `here` is given: a machine that re-times the table. `backend`
    defaults to the target's.
    """
    problems: list[str] = []
    if config is not None:
        if table.space != config.name:
            problems.append(f"made for space '{table.space}', not '{config.name}'")
        elif table.space_hash != config.hash:
            problems.append(f"space hash {table.space_hash} does not match '{config.name}' ({config.hash}): "
                            "the space YAML changed since the table was measured")
    fp = table.fingerprint
    if target is not None:
        if table.target_name != target.name:
            problems.append(f"made for target '{table.target_name}', not '{target.name}'")
        elif table.target.get("hash") != target.hash:
            old = table.target.get("settings") or {}
            changed = sorted(k for k in set(old) | set(target.canonical())
                             if old.get(k) != target.canonical().get(k))
            problems.append(f"target '{target.name}' changed since the table was measured "
                            f"(settings now differ: {', '.join(changed) or 'unknown'})")
        expected = {"backend": backend or target.backend,
                    "execution_provider": execution_provider(target, backend or target.backend),
                    "precision": run_precision(target), "threads": target.threads}
        problems += run_mismatches(fp, expected)
        if target.device == "cuda" and not fp.get("gpu"):
            problems.append(f"target '{target.name}' runs on a GPU, but the device that timed the table "
                            "had none")
    elif backend is not None and table.backend != backend:
        problems.append(f"backend: table has {table.backend!r}, expected {backend!r}")
    if here is not None:
        problems += device_mismatches(fp, dict(here))
    return problems


def check_table(table: LatencyTable, config: SpaceConfig | str | None = None,
                target: Target | str | None = None, allow_foreign: bool = False,
                backend: str | None = None, retime: bool = False) -> LatencyTable:
    """Refuse a foreign table (SSTEdgeError naming the file and each mismatch) unless `allow_foreign`.

    For other verbs (search, train) that take a table: call after loading, with the space and target.
    `retime`: this machine is about to time the table again, so it must be the device that timed it.
    With `allow_foreign`, the mismatches are kept in `table.foreign` and shown as a warning.
    """
    cfg = load_space(config) if isinstance(config, str) else config
    tgt = load_target(target) if isinstance(target, str) else target
    here = device_fingerprint(uses_gpu=bool(table.fingerprint.get("gpu"))) if retime else None
    if cfg is not None and table.space == cfg.name and table.space_hash == cfg.hash:
        missing = missing_entries(table, cfg)
        if missing:
            raise SSTEdgeError(f"the latency table lacks {len(missing)} of the entries of space "
                               f"'{cfg.name}' (re-profile it)", table.path, missing[:20])
    problems = foreign_problems(table, cfg, tgt, backend, here)
    if problems and not allow_foreign:
        raise SSTEdgeError("latency table made for another space, target or device"
                           + (" than this machine, which would re-time it" if retime else "")
                           + f"; {FOREIGN_HINT}", table.path, problems)
    table.foreign = problems
    if problems:
        where = f"{table.path}: " if table.path else ""
        warnings.warn(f"{where}using a foreign latency table: " + "; ".join(problems), stacklevel=2)
    return table


def load_table(path_or_name: str | Path, config: SpaceConfig | str | None = None,
               target: Target | str | None = None, allow_foreign: bool = False,
               backend: str | None = None) -> LatencyTable:
    """Read a table by name (latency_tables/NAME.json) or path, and check it against the space, the
    target and this device (see `check_table`)."""
    return check_table(read_table(path_or_name), config, target, allow_foreign, backend)


def load_table_for(path_or_name: str | Path, config: SpaceConfig, target: Target | str | None = None,
                   allow_foreign: bool = False) -> LatencyTable:
    """The table a search or a training run predicts with: checked against the run's space and `target`
    (default: the target the table names, as shipped in export/), never against this host."""
    table = read_table(path_or_name)
    if target is None:
        try:
            target = load_target(table.target_name)
        except SSTEdgeError:  # a custom target YAML that is not here: nothing to judge its settings by
            target = None
    return check_table(table, config, target, allow_foreign, table.backend)


def read_table(path_or_name: str | Path) -> LatencyTable:
    """Read and validate a table's format only: no space, target or device checks (see `load_table`)."""
    path = resolve("table", path_or_name)
    return LatencyTable.from_dict(read_json(path, "latency table"), path)
