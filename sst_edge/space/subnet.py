"""The subnet document (best.json): one architecture of a space, with the space's hash and metrics.

Loading checks it against the space and names every unknown or missing label and every bad value, so a
document from another space or a hand-edited one never reaches a model silently.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import SSTEdgeError
from ..fileio import atomic_write_json, read_json
from ..schema import TEXT, check, header_schema
from ..text import brief
from .config import Choices, SpaceConfig, load_space

FORMAT = "sst-edge/subnet"
VERSION = 1
SUBNET_SCHEMA = {
    "type": "object", "required": ["format", "version", "space", "space_hash", "sample"],
    "properties": {**header_schema(FORMAT, VERSION), "space": {**TEXT, "maxLength": 200},
                   "space_hash": {**TEXT, "maxLength": 128},
                   "sample": {"type": "object", "propertyNames": {"format": "text", "maxLength": 200}},
                   "metrics": {"type": "object"}}}


def is_choice(value: Any, allowed: list) -> bool:
    """`value` is one of `allowed` with the same type: 12.0 and True are not the heads choice 12."""
    return any(value == a and type(value) is type(a) for a in allowed)


@dataclass
class Subnet:
    space: str
    space_hash: str
    sample: dict[str, Any]
    metrics: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "version": VERSION, "space": self.space, "space_hash": self.space_hash,
                "sample": dict(self.sample), "metrics": dict(self.metrics)}

    def save(self, path: str | Path) -> Path:
        return atomic_write_json(path, check(self.to_dict(), SUBNET_SCHEMA, "subnet document", path))


def sample_problems(config: SpaceConfig, sample: Mapping[str, Any],
                    restriction: Choices | None = None) -> list[str]:
    """Every unknown label, missing label and out-of-range value of a sample, in forward order."""
    allowed = dict(config.choices())
    if restriction:
        allowed.update({k: list(v) for k, v in restriction.items() if k in allowed})
    problems = [f"unknown label '{brief(k)}'" for k in sample if k not in allowed]
    for label, values in allowed.items():
        if label not in sample:
            problems.append(f"missing label '{label}'")
        elif not is_choice(sample[label], values):
            problems.append(f"'{label}' = {brief(repr(sample[label]))} is not one of {values}")
    return problems


def make_subnet(config: SpaceConfig, sample: Mapping[str, Any], metrics: Mapping[str, Any] | None = None,
                restriction: Choices | None = None) -> Subnet:
    problems = sample_problems(config, sample, restriction)
    if problems:
        raise SSTEdgeError(f"not a subnet of space '{config.name}'", None, problems)
    ordered = {k: sample[k] for k in config.choices()}
    return Subnet(config.name, config.hash, ordered, dict(metrics or {}))


def load_subnet(path: str | Path, space: SpaceConfig | str | Path | None = None,
                restriction: Choices | None = None) -> tuple[Subnet, SpaceConfig]:
    """Read and validate a subnet document; the space defaults to the one the document names."""
    doc = check(read_json(path, "subnet document"), SUBNET_SCHEMA, "subnet document", path)
    problems: list[str] = []
    if space is None:
        try:
            config = load_space(doc["space"])
        except SSTEdgeError as e:
            raise SSTEdgeError(f"names space '{doc['space']}', which cannot be loaded ({e})", path) from None
    else:
        config = space if isinstance(space, SpaceConfig) else load_space(space)
    if doc["space"] != config.name:
        problems.append(f"made for space '{doc['space']}', not '{config.name}'")
    if doc["space_hash"] != config.hash:
        problems.append(f"space hash {doc['space_hash']} does not match '{config.name}' ({config.hash}): "
                        "the space YAML changed since this subnet was made")
    problems += sample_problems(config, doc["sample"], restriction)
    if problems:
        raise SSTEdgeError(f"subnet does not fit space '{config.name}'", path, problems)
    sub = Subnet(doc["space"], doc["space_hash"], {k: doc["sample"][k] for k in config.choices()},
                 dict(doc.get("metrics") or {}))
    return sub, config
