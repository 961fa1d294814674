"""Every `sst-edge ...` command the README shows parses with the real argument parser, so the README cannot
drift from the CLI (a renamed flag fails here)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from sst_edge.cli import build_parser

README = Path(__file__).resolve().parent.parent / "README.md"


def readme_commands() -> list[str]:
    """The `sst-edge` command lines inside the README's code blocks (continuations joined, comments cut)."""
    out, in_code, pending = [], False, ""
    for line in README.read_text(encoding="utf-8").splitlines():
        if line.lstrip().startswith("```"):
            in_code, pending = not in_code, ""
            continue
        if not in_code:
            continue
        text = pending + line.strip()
        pending = ""
        if text.endswith("\\"):
            pending = text[:-1] + " "
            continue
        text = re.sub(r"\s+#.*$", "", text)
        m = re.search(r"(?:^|\$ |\.venv[\w-]*/bin/|&& )(sst-edge\s.*)$", text)
        if m:
            out.append(m.group(1).split(" && ")[0].split(" | ")[0])
    return out


def test_the_readme_shows_commands() -> None:
    assert len(readme_commands()) >= 20


@pytest.mark.parametrize("command", readme_commands())
def test_readme_command_parses(command: str) -> None:
    args = shlex.split(command)[1:]
    try:
        build_parser().parse_args(args)
    except SystemExit as e:
        pytest.fail(f"does not parse (exit {e.code}): {command}")
