"""The restriction: which values of each label survive training's shrinking, as a JSON file
(`restriction.json` in a run folder) that search, eval and `space show|sample --restriction` read."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import SSTEdgeError
from ..fileio import atomic_write_json, read_json
from ..schema import TEXT, check, header_schema
from ..text import brief
from .config import Choices, SpaceConfig
from .subnet import is_choice

FORMAT = "sst-edge/restriction"
FILE = "restriction.json"  # in a training run's folder
OLD_FILE = "shrunk.json"  # its earlier name, in older runs; still read
KIND = "restriction file"
# The document's field of allowed values is "keep" (the file format is unchanged); in code it is `choices`.
RESTRICTION_SCHEMA = {
    "type": "object", "required": ["format", "space", "space_hash", "keep"],
    "properties": {**header_schema(FORMAT, None), "space": {**TEXT, "maxLength": 200},
                   "space_hash": {**TEXT, "maxLength": 128},
                   "keep": {"type": "object", "propertyNames": {"format": "text", "maxLength": 200},
                            "additionalProperties": {"type": "array"}},
                   "history": {"type": "array"}}}


@dataclass
class Restriction:
    """A restriction of one space: `choices` (label -> allowed values) and the shrink events behind it."""

    space: str
    space_hash: str
    choices: dict[str, list]
    history: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "space": self.space, "space_hash": self.space_hash,
                "keep": self.choices, "history": self.history}

    def save(self, path: str | Path) -> Path:
        return atomic_write_json(path, check(self.to_dict(), RESTRICTION_SCHEMA, KIND, path))


def full_restriction(config: SpaceConfig) -> Restriction:
    return Restriction(config.name, config.hash, config.choices())


def space_size(config: SpaceConfig, restriction: Choices | None = None) -> int:
    """Number of architectures of the space, restricted or not."""
    return math.prod(len(v) for v in restricted_choices(config, restriction).values())


def restricted_choices(config: SpaceConfig, restriction: Choices | None) -> dict[str, list]:
    """Every label of the space with the values `restriction` allows (all of them where it says nothing)."""
    ch = config.choices()
    if restriction:
        ch.update({k: list(v) for k, v in restriction.items() if k in ch})
    return ch


def restriction_problems(config: SpaceConfig, restriction: Choices) -> list[str]:
    allowed = config.choices()
    problems = []
    for label, values in restriction.items():
        if label not in allowed:
            problems.append(f"unknown label '{brief(label)}'")
        elif not isinstance(values, list) or not values:
            problems.append(f"'{label}' keeps no value (every label needs at least one)")
        else:
            problems += [f"'{label}': {brief(repr(v))} is not one of {allowed[label]}" for v in values
                         if not is_choice(v, allowed[label])]
    return problems


def load_restriction(path: str | Path, config: SpaceConfig) -> Restriction:
    """Read a restriction file and check it belongs to `config`, naming every problem."""
    doc = check(read_json(path, KIND), RESTRICTION_SCHEMA, KIND, path)
    problems = []
    if doc.get("space") != config.name:
        problems.append(f"made for space '{doc.get('space')}', not '{config.name}'")
    if doc.get("space_hash") != config.hash:
        problems.append(f"space hash {doc.get('space_hash')} does not match '{config.name}' ({config.hash})")
    problems += restriction_problems(config, doc["keep"])
    if problems:
        raise SSTEdgeError(f"restriction does not fit space '{config.name}'", path, problems)
    return Restriction(doc["space"], doc["space_hash"], {k: list(v) for k, v in doc["keep"].items()},
                       list(doc.get("history") or []))


def run_restriction_file(folder: Path) -> Path | None:
    """A run folder's restriction file (restriction.json, or shrunk.json of older runs), if any."""
    for name in (FILE, OLD_FILE):
        if (folder / name).is_file():
            return folder / name
    return None
