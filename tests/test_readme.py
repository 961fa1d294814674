"""The README and the reference under docs/ cannot drift from the code: every `sst-edge ...` command they
show parses with the real argument parser (a renamed flag fails here), every file of the repository they
cite exists, and nothing points outside the repository (a user's checkout has only this)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from sst_edge.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
TOP = ("sst_edge/", "tests/", "bench/", "export/", "search_spaces/", "latency_tables/", "docs/", ".ci/")
ROOT_FILES = ("Makefile", "pyproject.toml", "constraints.txt", "mkdocs.yml", "CHANGELOG.md")


def page_commands(page: Path) -> list[str]:
    """The `sst-edge` command lines inside a page's code blocks (continuations joined, comments cut)."""
    out, in_code, pending = [], False, ""
    for line in page.read_text(encoding="utf-8").splitlines():
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


def commands() -> list[tuple[str, str]]:
    return [(p.relative_to(ROOT).as_posix(), c) for p in PAGES for c in page_commands(p)]


def cited_files(page: Path) -> list[str]:
    """Repository paths a page names: link targets, and `code` spans that start with a top-level folder
    or are a root file (placeholders such as <name>, globs and options are not paths)."""
    text = page.read_text(encoding="utf-8")
    found = []
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
        if "://" not in target:
            found.append((page.parent / target).resolve().relative_to(ROOT).as_posix())
    for span in re.findall(r"`([^`\n]+)`", text):
        token = span.split()[0] if span.split() else ""
        token = token.split(":")[0].rstrip(".,;)")
        if any(c in token for c in "<>*{}[]$"):
            continue
        if token.startswith("sst_edge/_data/"):  # inside the built wheel, not the checkout
            continue
        if token.startswith(TOP) or token in ROOT_FILES:
            found.append(token)
    return found


def test_the_pages_show_commands() -> None:
    assert len(page_commands(README)) >= 8
    assert len(commands()) >= 45


@pytest.mark.parametrize(("page", "command"), commands())
def test_command_parses(page: str, command: str) -> None:
    args = shlex.split(command)[1:]
    try:
        build_parser().parse_args(args)
    except SystemExit as e:
        pytest.fail(f"{page}: does not parse (exit {e.code}): {command}")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_cited_file_exists(page: Path) -> None:
    missing = sorted({f for f in cited_files(page) if not (ROOT / f).exists()})
    assert not missing, f"{page.relative_to(ROOT)} cites files that are not in the repository: {missing}"


def test_the_file_check_sees_a_missing_file(tmp_path: Path) -> None:
    page = ROOT / "docs" / "_probe_page.md"
    page.write_text("See `sst_edge/nowhere.py` and [that page](gone.md); not `runs/<name>/`.\n")
    try:
        assert cited_files(page) == ["docs/gone.md", "sst_edge/nowhere.py"]
    finally:
        page.unlink()


@pytest.mark.parametrize("path", [*PAGES, *sorted((ROOT / "export").glob("*.yaml")),
                                  *sorted((ROOT / "sst_edge").rglob("*.py"))],
                         ids=lambda p: p.relative_to(ROOT).as_posix())
def test_nothing_points_outside_the_repository(path: Path) -> None:
    assert "../shared" not in path.read_text(encoding="utf-8"), f"{path} points outside the repository"


@pytest.mark.parametrize("folder", ["search_spaces", "export"])
def test_the_layout_names_every_shipped_file(folder: str) -> None:
    layout = (ROOT / "docs" / "development.md").read_text(encoding="utf-8")
    row = next(line for line in layout.splitlines() if line.startswith(f"| `{folder}/` |"))
    missing = [p.name for p in sorted((ROOT / folder).iterdir()) if f"`{p.name}`" not in row]
    assert not missing, f"docs/development.md's layout does not name {folder}/{missing}"


def test_every_figure_the_docs_show_is_generated_dated_and_placed() -> None:
    """A `<!-- figure: NAME -->` mark names a file bench/figures.py wrote, with when, at which commit and
    on which host it was measured; and bench/figures.py knows how to make it again."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("figures", ROOT / "bench" / "figures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    marks = sorted({m for p in PAGES for m in re.findall(r"<!-- figure: ([a-z0-9_-]+) -->", p.read_text())})
    assert marks, "no generated figure on any page"
    for name in marks:
        assert name in module.FIGURES, f"bench/figures.py cannot make figure {name}"
        text = (ROOT / "docs" / "figures" / f"{name}.md").read_text()
        rows = ("| date (UTC) | 20", "| commit | ", "| CPU | ", "| CPU speed features | ", "| versions | ",
                "| machine load (1-min average, start / end) | ")
        for row in rows:
            assert row in text, f"docs/figures/{name}.md lacks {row!r}"
        if module.FIGURES[name].plot:  # the plot people look at comes with the figure, from the same run
            plot = ROOT / "docs" / "figures" / f"{name}.png"
            assert plot.is_file(), f"docs/figures/{name}.png is missing"
