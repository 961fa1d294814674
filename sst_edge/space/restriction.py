"""The shrunk space: which values of each label survive shrinking, as a JSON file that search reads."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import SSTEdgeError
from ..fileio import atomic_write_json, read_json
from ..schema import TEXT, check, header_schema
from ..text import brief
from .config import SpaceConfig
from .subnet import is_choice

FORMAT = "sst-edge/restriction"
RESTRICTION_SCHEMA = {
    "type": "object", "required": ["format", "space", "space_hash", "keep"],
    "properties": {**header_schema(FORMAT, None), "space": {**TEXT, "maxLength": 200},
                   "space_hash": {**TEXT, "maxLength": 128},
                   "keep": {"type": "object", "propertyNames": {"format": "text", "maxLength": 200},
                            "additionalProperties": {"type": "array"}},
                   "history": {"type": "array"}}}


@dataclass
class Restriction:
    space: str
    space_hash: str
    keep: dict[str, list]
    history: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "space": self.space, "space_hash": self.space_hash,
                "keep": self.keep, "history": self.history}

    def save(self, path: str | Path) -> Path:
        return atomic_write_json(path, check(self.to_dict(), RESTRICTION_SCHEMA, "shrunk-space file", path))


def full_restriction(config: SpaceConfig) -> Restriction:
    return Restriction(config.name, config.hash, config.choices())


def keep_problems(config: SpaceConfig, keep: Mapping[str, Sequence]) -> list[str]:
    allowed = config.choices()
    problems = []
    for label, values in keep.items():
        if label not in allowed:
            problems.append(f"unknown label '{brief(label)}'")
        elif not isinstance(values, list) or not values:
            problems.append(f"'{label}' keeps no value (every label needs at least one)")
        else:
            problems += [f"'{label}': {brief(repr(v))} is not one of {allowed[label]}" for v in values
                         if not is_choice(v, allowed[label])]
    return problems


def load_restriction(path: str | Path, config: SpaceConfig) -> Restriction:
    """Read a shrunk-space JSON and check it belongs to `config`, naming every problem."""
    doc = check(read_json(path, "shrunk-space JSON"), RESTRICTION_SCHEMA, "shrunk-space file", path)
    problems = []
    if doc.get("space") != config.name:
        problems.append(f"made for space '{doc.get('space')}', not '{config.name}'")
    if doc.get("space_hash") != config.hash:
        problems.append(f"space hash {doc.get('space_hash')} does not match '{config.name}' ({config.hash})")
    problems += keep_problems(config, doc["keep"])
    if problems:
        raise SSTEdgeError(f"shrunk space does not fit space '{config.name}'", path, problems)
    return Restriction(doc["space"], doc["space_hash"], {k: list(v) for k, v in doc["keep"].items()},
                       list(doc.get("history") or []))
