"""Tables and markup rendered to plain lines, for results whose `lines()` show a table (rich, without
colour codes). Kept apart from `result` so that the CLI's help never imports rich."""

from __future__ import annotations

import io
from typing import Any

from rich.console import Console
from rich.markup import escape

from .text import printable


def cell(text: object) -> str:
    """Text for a table cell or title: non-printable characters escaped (a newline in a class name
    would otherwise split its row in two) and rich markup escaped."""
    return escape(printable(text))


def rich_lines(*items: Any, width: int = 120) -> list[str]:
    """rich renderables (tables, markup) as plain lines without colour codes, for a result's `lines()`."""
    console = Console(file=io.StringIO(), width=width, color_system=None, highlight=False, soft_wrap=True)
    for item in items:
        console.print(item)
    return console.file.getvalue().rstrip("\n").split("\n")  # type: ignore[attr-defined]
