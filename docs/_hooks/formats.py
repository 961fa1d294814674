"""MkDocs hooks: the formats page renders every document's JSON Schema from the code that checks it, so
the reference cannot drift from what sst-edge accepts; and `<!-- figure: NAME -->` includes the generated
figure docs/figures/NAME.md (bench/figures.py), so no measured number on a page is typed by hand."""

from __future__ import annotations

import importlib
import json
import re
from pathlib import Path
from typing import Any

MARK = "<!-- schemas -->"

# (document, module, schema constant): the schema each reader checks a document against
SCHEMAS = [
    ("Subnet (`best.json`)", "sst_edge.space.subnet", "SUBNET_SCHEMA"),
    ("Search-space restriction (`restriction.json`)", "sst_edge.space.restriction", "RESTRICTION_SCHEMA"),
    ("Latency table (`latency_tables/*.json`)", "sst_edge.cost.latency", "TABLE_SCHEMA"),
    ("Profiling bundle manifest (`bundle.json`)", "sst_edge.device.bundle", "MANIFEST_SCHEMA"),
    ("Profiling bundle timings (`timings.json`)", "sst_edge.device.bundle", "TIMINGS_SCHEMA"),
    ("Model card (`card.json`)", "sst_edge.device.card", "CARD_SCHEMA"),
    ("Gallery index (`gallery.json`)", "sst_edge.runtime.gallery", "INDEX_SCHEMA"),
    ("Gallery calibration record", "sst_edge.runtime.gallery", "CALIBRATION_SCHEMA"),
    ("Live event (`watch`)", "sst_edge.runtime.live.events", "EVENT_SCHEMA"),
]


def render() -> str:
    parts = []
    for title, module, name in SCHEMAS:
        schema: Any = getattr(importlib.import_module(module), name)
        parts.append(f"## {title}\n\nChecked by `{module}.{name}`:\n\n```json\n"
                     f"{json.dumps(schema, indent=2, sort_keys=True, default=str)}\n```\n")
    return "\n".join(parts)


FIGURE = re.compile(r"<!-- figure: ([a-z0-9_-]+) -->")
FIGURES = Path(__file__).resolve().parent.parent / "figures"


def figure(match: re.Match[str]) -> str:
    path = FIGURES / f"{match.group(1)}.md"
    if not path.is_file():  # a strict build must fail: the page shows a figure nobody generated
        raise FileNotFoundError(f"{path} is missing: run `make figures` (bench/figures.py {match.group(1)})")
    plot = path.with_suffix(".png")  # the plot the same run drew, if it draws one
    shown = f"\n![figure {match.group(1)}](figures/{plot.name})\n" if plot.is_file() else ""
    return path.read_text(encoding="utf-8") + shown


def on_page_markdown(markdown: str, page: Any, **_: Any) -> str:
    markdown = FIGURE.sub(figure, markdown)
    return markdown.replace(MARK, render()) if MARK in markdown else markdown
