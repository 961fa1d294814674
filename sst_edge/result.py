"""The one convention for what a verb returns: an object with `lines()` (what a person reads) and
`to_dict()` (what a script reads, as JSON). The CLI prints one or the other (`--json`)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Protocol

from .text import printable


class Result(Protocol):
    def lines(self) -> list[str]: ...

    def to_dict(self) -> dict[str, Any]: ...


@dataclass
class Report:
    """A result made of a written document (`data`) and the lines that summarise it."""

    text: list[str]
    data: dict[str, Any] = field(default_factory=dict)

    def lines(self) -> list[str]:
        return list(self.text)

    def to_dict(self) -> dict[str, Any]:
        return self.data


def render(result: Result, as_json: bool = False) -> str:
    """JSON (control characters escaped by json; NaN refused), or the result's lines with every
    non-printable character escaped: labels and paths may come from edited or copied documents."""
    if as_json:
        return json.dumps(result.to_dict(), indent=2, allow_nan=False, default=str)
    return "\n".join(printable(line) for line in result.lines())

